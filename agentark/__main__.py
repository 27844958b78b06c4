from agentark.cli import app

app()
