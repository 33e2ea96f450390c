"""POST /api/publish with {"group": G, "data": X}, as Herald's: one group_send per message."""

import json

from channels.layers import get_channel_layer
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt


@csrf_exempt
async def publish(request):
    body = json.loads(request.body)
    frame = json.dumps({"type": "message", "group": body["group"], "data": body["data"]})
    await get_channel_layer().group_send(body["group"], {"type": "bench.message", "frame": frame})
    return JsonResponse({"ok": True})
