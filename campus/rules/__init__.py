"""Domain rules with no input/output of their own: the grid, record kinds, URL rules, names, passwords and
secrets, the base-file format (written, read), letters, the school calendar, the publication of the spaces,
the timetable transfer, the users file."""
