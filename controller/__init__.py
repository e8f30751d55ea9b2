"""RCIoTs controller: Git source, fleet model, renderer, enrollment, connector, status.

Controller-side code imports the shared wire protocol from ``rciots.agent``; the agent never
imports anything from here.
"""
