"""The newsletter folder itself: making one (``mailer init``) and checking it (``mailer
doctor``)."""
