"""The studio: a web page for people, served at ``/``; it talks only to the public API."""
