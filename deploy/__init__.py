"""modelhost's deploy library: settings, host facts, gunicorn settings, rendering, validation and
the one place that runs commands on a host. The Fabric tasks in fabfile.py are its only caller."""
