from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Creates the example's users: ann (staff) and bob, password 'herald-demo'."

    def handle(self, *args, **options):
        users = get_user_model()
        for name, staff in [("ann", True), ("bob", False)]:
            user, _ = users.objects.get_or_create(username=name, defaults={"is_staff": staff})
            user.is_staff = staff
            user.set_password("herald-demo")
            user.save()
        self.stdout.write("users ann (staff) and bob, password herald-demo")
