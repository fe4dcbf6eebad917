"""The use cases, one service per topic.

Each service is a class built by the composition root (:mod:`campus.app`) with
what it uses: the :class:`~campus.services.base.Core` (the command path, the
aggregates, the clock, the views, the settings) and, by name, the other services
it calls (``self.plannings.get_planning(...)``). No service imports the
application class; services refer to each other's types only for type checking.
"""
