"""AI voice agents: the MCP server (/mcp), Retell's custom function and Vapi's tool calls."""
