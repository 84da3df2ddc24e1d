"""Outside calendars of a clinic's providers: OAuth accounts, connections and sync.

Google Calendar, Microsoft 365 / Outlook (Graph) and any CalDAV server. Busy time of a
provider's chosen calendars is imported into ``busy_blocks``; see ``sync`` for what is
imported and what is ignored, ``tokens`` for single-flight OAuth refresh.
"""
