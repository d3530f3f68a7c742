"""One module per command, binding it to the adapters and settings it needs.

Every runner has the same signature, `async def run(services, tokens, invocation) -> CommandResult`,
and a destructive command's runner also has `async def execute(services, plan, progress) -> Execution`.
"""
