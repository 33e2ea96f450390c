from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth.decorators import login_required
from django.http import FileResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from .models import Message


@login_required
def index(request):
    return redirect("room", room="lobby")


@login_required
def room(request, room):
    recent = Message.objects.filter(room=room).select_related("user").order_by("-id")[:20]
    return render(
        request,
        "chat/room.html",
        {"room": room, "recent": reversed(recent), "herald_ws_url": settings.HERALD_WS_URL},
    )


@staff_member_required(login_url=settings.LOGIN_URL)
@require_POST
def announce(request):
    """An unchanged Channels call: the bridge carries it to every Herald client of the room."""
    async_to_sync(get_channel_layer().group_send)(
        "chat.lobby", {"type": "chat.announcement", "text": request.POST["text"]}
    )
    return redirect("room", room="lobby")


def herald_js(request):
    return FileResponse(open(settings.HERALD_JS, "rb"), content_type="text/javascript")
