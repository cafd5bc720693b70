"""Starting and stopping SGLang workers with the moep plugin."""
