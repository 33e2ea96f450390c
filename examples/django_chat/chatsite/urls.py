from django.contrib.auth import views as auth_views
from django.urls import path

from chat import hooks, views

urlpatterns = [
    path("", views.index, name="index"),
    path("room/<slug:room>/", views.room, name="room"),
    path("announce/", views.announce, name="announce"),
    path("herald.js", views.herald_js),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    # Herald's hooks ([proxy] in herald.toml) and the scheduler's data source ([[jobs]]).
    path("herald/connect", hooks.connect),
    path("herald/subscribe", hooks.subscribe),
    path("herald/publish", hooks.publish),
    path("herald/dashboard", hooks.dashboard),
]
