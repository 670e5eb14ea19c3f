"""Sample documents about Switchboard, ingested into an empty knowledge base at startup."""
