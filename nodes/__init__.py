"""Node functions, agent state, prompts, tools and the chat-model factory."""
