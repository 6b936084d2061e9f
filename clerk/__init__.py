"""clerk: turns a city's meeting documents into a searchable SQLite database, on pgqueue."""

__version__ = "0.1.0"
