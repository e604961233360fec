"""The bundled demo target: a rental-assistance service to rehearse against, and how to start it."""
