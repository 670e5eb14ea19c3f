"""The seed chat API on the run engine: /chat turns are runs, their transcript is their result."""
