"""The evaluation machinery: prompt sets, generation runner, scorers, tables, CLI."""
