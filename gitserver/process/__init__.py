"""The process and its children: dying with the parent, stopping process groups, the job
sandbox, and the warning filters every entry point installs before it imports a dependency."""
