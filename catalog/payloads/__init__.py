"""Pydantic payload models, one module per event family (tickets, scheduling, projects, time).

Each model mirrors one payload table of SPEC §4.1 (``payload.*.v1``) or, for legacy bus types
without a v1 schema, the bus shape of SPEC §4.2. A model's class name is the PascalCase form of
its event type, so ``payload.<ClassName>.v1`` is its schema ref; the registry checks this.
"""
