"""Everything that persists: SQL models and repositories, migrations, embedded servers."""
