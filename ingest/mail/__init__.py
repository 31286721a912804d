"""Mail to the person: the outbox's mails, their wording, and how they are sent."""
