"""Herald asks this backend (its [proxy] hooks): who a WebSocket belongs to, who may join a
room, and what a browser's message becomes. Django's own session middleware reads the cookie
Herald forwards from the handshake, so `request.user` works as in any view.

These views trust their caller: keep them reachable by Herald only (a private network, or a
reverse proxy that does not route /herald/ from outside)."""

import json

from django.contrib.auth import get_user_model
from django.http import HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from .models import Message


def refuse(status, reason):
    return JsonResponse({"reason": reason}, status=status)


@csrf_exempt
@require_POST
def connect(request):
    """A new WebSocket: the logged-in user, what they may do, and their own group."""
    user = request.user
    if not user.is_authenticated:
        return refuse(401, "log in first")
    if not user.is_active:
        return refuse(403, "account disabled")
    return JsonResponse(
        {
            "user": str(user.pk),
            "info": {"name": user.username},
            "groups": ["chat.*", "dashboard.*", f"user.{user.pk}"],
            "publish": ["chat.*"],
            "subscribe": [f"user.{user.pk}"],
        }
    )


@csrf_exempt
@require_POST
def subscribe(request):
    """Every room is open to every user, but the staff room."""
    body = json.loads(request.body)
    if body["group"] == "chat.staff":
        staff = get_user_model().objects.filter(pk=body.get("user"), is_staff=True).exists()
        if not staff:
            return refuse(403, "staff only")
    return HttpResponse(status=200)


@csrf_exempt
@require_POST
def publish(request):
    """What a consumer's receive() did: validate, save, and hand back what to broadcast."""
    body = json.loads(request.body)
    text = str((body.get("data") or {}).get("text", "")).strip()
    if not text or len(text) > 500:
        return refuse(403, "a message is 1 to 500 characters")
    user = get_user_model().objects.get(pk=body["user"])
    room = body["group"].removeprefix("chat.")
    message = Message.objects.create(room=room, user=user, text=text)
    return JsonResponse({"data": message.as_event()})


def dashboard(request):
    """The block every room shows, pushed by Herald's scheduler every 10 seconds."""
    return JsonResponse(
        {
            "messages": Message.objects.count(),
            "users": get_user_model().objects.count(),
            "time": timezone.now().isoformat(),
        }
    )
