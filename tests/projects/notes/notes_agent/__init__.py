"""A package of the notes project, imported by module path (`notes_agent.factory:make_graph`)."""
