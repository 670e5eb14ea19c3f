"""HTTP routes: thin functions that parse, call into stores/ or graphs/, and return."""
