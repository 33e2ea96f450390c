"""A consumer speaking the subset of Herald's protocol that `herald-bench` uses: welcome,
subscribe (group_add) with a reply, and message frames pushed by group_send."""

import json

from channels.generic.websocket import AsyncWebsocketConsumer


class BenchConsumer(AsyncWebsocketConsumer):
    async def connect(self):
        await self.accept()
        await self.send(text_data=json.dumps({"type": "welcome", "client": self.channel_name, "node": "daphne"}))

    async def receive(self, text_data=None, bytes_data=None):
        request = json.loads(text_data)
        if request.get("type") == "subscribe":
            await self.channel_layer.group_add(request["group"], self.channel_name)
            await self.send(text_data=json.dumps({"type": "reply", "id": request.get("id")}))

    async def bench_message(self, event):
        await self.send(text_data=event["frame"])
