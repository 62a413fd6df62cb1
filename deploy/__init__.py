"""modelhost's deploy library: settings, host facts, the worker rule, rendering, validation, the
steps of a deploy (one module each; deploy/deployment.py composes them), the commands they run
(deploy/commands/) and the one place that runs them (deploy/target.py). The Fabric tasks in
fabfile.py are its only caller; README.md's Architecture section maps the modules."""
