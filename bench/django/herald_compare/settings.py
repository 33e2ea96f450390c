"""Settings of the Django Channels side of the Herald comparison (see ../README.md)."""

import os

SECRET_KEY = "comparison-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["daphne", "channels"]
ROOT_URLCONF = "herald_compare.urls"
ASGI_APPLICATION = "herald_compare.asgi.application"
USE_TZ = True

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
# CHANNEL_LAYER=core (RedisChannelLayer) or pubsub (RedisPubSubChannelLayer).
LAYER = {
    "core": "channels_redis.core.RedisChannelLayer",
    "pubsub": "channels_redis.pubsub.RedisPubSubChannelLayer",
}[os.environ.get("CHANNEL_LAYER", "core")]
CHANNEL_LAYERS = {"default": {"BACKEND": LAYER, "CONFIG": {"hosts": [REDIS_URL]}}}
