"""Domain rules with no input/output of their own: the grid, record kinds, URL rules, names, passwords and
secrets, the base-file format, letters."""
