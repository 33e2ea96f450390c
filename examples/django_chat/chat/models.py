from django.conf import settings
from django.db import models


class Message(models.Model):
    """A chat message, saved by the publish hook before Herald publishes it."""

    room = models.CharField(max_length=100)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    text = models.CharField(max_length=500)
    created = models.DateTimeField(auto_now_add=True)

    def as_event(self):
        return {
            "type": "chat.message",
            "id": self.id,
            "user": self.user.username,
            "text": self.text,
            "created": self.created.isoformat(),
        }
