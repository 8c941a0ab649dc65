"""Energy of serving engines under load: ``carbonbench serving`` drives an OpenAI-compatible
endpoint, or a server it starts itself (``--server "CMD"``)."""
