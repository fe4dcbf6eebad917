"""``campus demo``: a demo school with 30 days of simulated activity, so a new user can
try the time machine (as_of reads, diffs, restores, saves and archives) at once.

Everything goes through the application's use cases, as the HTTP API would:
the hosting manager opens the console, binds a domain, creates the
superadministrator and the users, assigns their profiles and creates a base
(in service at once: Campus edition); then, on a :class:`ManualClock` running
from 30 days ago to now, the school's users add, change and remove records
about every hour of the school days (grades, absences, homework, …), and the
backup schedule runs as the clock passes, so the saves and archives of those
30 days exist, with their files. Each action carries its real actor
(``manager:<hosting number>``, ``user:<login>``, ``scheduler``).

The randomness is seeded (``--seed``): the same seed gives the same school
(but new secrets and ids).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

from campus.aggregates.planning import Profile
from campus.aggregates.user import Status
from campus.application import CampusApplication
from campus.errors import CampusError
from campus.infra.clock import ManualClock, SystemClock
from campus.infra.context import RequestContext, reset_context, set_context
from campus.infra.settings import Settings
from campus.rules.security import generate_password

DAYS = 30
ESTABLISHMENT = "Collège de démonstration"
DOMAIN = "college-demo"
SCHOOL_HOURS = range(8, 18)  # UTC hours with lessons, Monday to Friday
# The demo runs the backup schedule every other day of its clock (a server runs it every minute):
# each run takes what is due since the last one, at most what retention keeps, so the demo writes
# about 200 files instead of 400 and ends with exactly the saves and archives a server would have.
BACKUPS_EVERY = timedelta(days=2)

# login -> (last name, first name, status, profile on planning01)
USERS: dict[str, tuple[str, str, Status, Profile]] = {
    "direction": ("DURAND", "Hélène", Status.SUPERADMINISTRATOR, Profile.ADMINISTRATION),
    "secretariat": ("MOREAU", "Karim", Status.BASE_ADMINISTRATOR, Profile.ADMINISTRATION),
    "prof.martin": ("MARTIN", "Sophie", Status.USER, Profile.MODIFICATION),
    "vie.scolaire": ("PETIT", "Nadia", Status.USER, Profile.MODIFICATION),
    "inspection": ("ROUX", "Marc", Status.USER, Profile.CONSULTATION),
}
TEACHERS = ["prof.martin"]

SUBJECTS = [("Français", "FRA"), ("Mathématiques", "MATH"), ("Histoire-géographie", "HG"), ("Anglais", "ANG"),
            ("Sciences de la vie et de la Terre", "SVT"), ("Physique-chimie", "PC"), ("Technologie", "TECH"),
            ("Éducation physique et sportive", "EPS")]
CLASSES = [("6e A", "6e"), ("6e B", "6e"), ("5e A", "5e"), ("5e B", "5e"), ("4e A", "4e"), ("3e A", "3e")]
LAST_NAMES = ["Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit", "Durand", "Leroy", "Moreau", "Simon",
              "Laurent", "Lefebvre", "Michel", "Garcia", "David", "Bertrand", "Roux", "Vincent", "Fournier",
              "Morel", "Girard", "André", "Mercier", "Dupont", "Lambert", "Bonnet", "François", "Martinez"]
FIRST_NAMES = ["Emma", "Gabriel", "Léa", "Louis", "Jade", "Raphaël", "Louise", "Jules", "Alice", "Adam", "Chloé",
               "Arthur", "Lina", "Hugo", "Mila", "Nathan", "Rose", "Paul", "Anna", "Tom", "Inès", "Sacha"]
STUDENTS_PER_CLASS = 12


@dataclass
class DemoSchool:
    """What the demo made, and the secrets to show once."""

    hosting_number: str
    console_password: str
    invoice_number: str
    domain: str
    planning_id: UUID
    planning_name: str
    passwords: dict[str, str]  # login -> password
    began: datetime
    ended: datetime
    counts: dict[str, int] = field(default_factory=dict)
    saves: int = 0
    archives: int = 0
    actions: int = 0


class DemoRefused(Exception):
    """The data dir (or the store) already holds a campus store."""


def build_demo(settings: Settings, *, days: int = DAYS, seed: int | None = None,
               end: datetime | None = None) -> DemoSchool:
    """Create the demo school in an empty store and live `days` days of activity up to `end` (now)."""
    if not settings.uses_postgres and (settings.data_dir / "campus.sqlite3").exists():
        raise DemoRefused(f"{settings.data_dir} already holds a campus store (campus.sqlite3): "
                          "the demo needs an empty data dir")
    end = (end or SystemClock().now()).astimezone(UTC)
    clock = ManualClock(end - timedelta(days=days))
    app = CampusApplication(settings, clock=clock)
    try:
        if app.recorder.max_notification_id():
            raise DemoRefused("the store already holds events: the demo needs an empty store")
        school = _set_up(app, clock)
        activity = Activity(app, clock, school, random.Random(seed))
        activity.set_up_records()
        activity.live_until(end)
        _, base = app.bases.current_base(activity.account_id, school.planning_id)
        school.counts = {k: v for k, v in base.counts().items() if v}
        backups = app.backups.list_backups(activity.account_id, school.planning_id)
        school.saves = sum(b.kind == "save" for b in backups)
        school.archives = sum(b.kind == "archive" for b in backups)
        school.actions = activity.actions
        school.began, school.ended = end - timedelta(days=days), end
        return school
    finally:
        app.close()


@contextmanager
def acting(actor: str, client_address: str = "192.0.2.10") -> Iterator[None]:
    """Run the block as `actor` (the demo's events say who did them, as requests would)."""
    token = set_context(RequestContext(actor=actor, request_id=f"demo-{uuid4().hex[:16]}",
                                       client_address=client_address))
    try:
        yield
    finally:
        reset_context(token)


def _school_year(day: date) -> tuple[date, date]:
    """First Monday and last Sunday of a 44-week school year holding `day`."""
    year = day.year if day.month >= 8 else day.year - 1
    first_monday = date(year, 8, 25)
    first_monday += timedelta(days=(7 - first_monday.weekday()) % 7)
    return first_monday, first_monday + timedelta(weeks=44, days=-1)


def _set_up(app: CampusApplication, clock: ManualClock) -> DemoSchool:
    """Day one: the operator opens the account; the manager sets the school up from the console."""
    with acting("operator", "192.0.2.1"):
        opened = app.accounts.open_account(ESTABLISHMENT, "Claire Dupont", "claire.dupont@example.org")
    account = opened.account
    manager = f"manager:{account.hosting_number}"
    passwords: dict[str, str] = {}
    with acting(manager):
        app.accounts.accept_licence_agreement(account.id)
        clock.advance(timedelta(minutes=5))
        app.controllers.bind_controller_domain(account.id, DOMAIN)
        planning = app.plannings.list_plannings(account.id)[0]
        app.plannings.update_planning(account.id, planning.id, {"name": "Année en cours", "time_zone": "Europe/Paris",
                                                          "domain": f"{DOMAIN}-annee"})
        passwords["direction"] = generate_password(14)
        last, first, _, _ = USERS["direction"]
        app.users.create_first_superadministrator(account.id, first_name=first, last_name=last, login="direction",
                                            password=passwords["direction"],
                                            password_confirmation=passwords["direction"])
        app.controllers.activate_controller(account.id)
        clock.advance(timedelta(minutes=10))
        for login, (last, first, status, _) in USERS.items():
            if login != "direction":
                passwords[login] = app.users.create_user(account.id, login=login, last_name=last, first_name=first,
                                                   status=status).password
        for profile in Profile:
            app.plannings.assign_profile(account.id, planning.id, profile,
                               [login for login, spec in USERS.items() if spec[3] == profile])
        clock.advance(timedelta(minutes=10))
        first_monday, last_sunday = _school_year(clock.now().date())
        app.bases.create_base(account.id, planning.id, name=f"Base {first_monday.year}-{first_monday.year + 1}",
                        first_monday=first_monday, last_sunday=last_sunday,
                        working_days=["mon", "tue", "wed", "thu", "fri"], sequences_per_day=10,
                        sequence_minutes=60, split=2)
    return DemoSchool(hosting_number=account.hosting_number, console_password=opened.console_password,
                      invoice_number=opened.invoice_number, domain=DOMAIN, planning_id=planning.id,
                      planning_name="Année en cours", passwords=passwords, began=clock.now(), ended=clock.now())


class Activity:
    """The school's users at work, hour after hour, on the demo's clock."""

    def __init__(self, app: CampusApplication, clock: ManualClock, school: DemoSchool, rng: random.Random) -> None:
        self.app, self.clock, self.school, self.rng = app, clock, school, rng
        self.account_id = app.accounts.account_by_number(school.hosting_number).id
        self.actions = 0

    # -- plumbing ---------------------------------------------------------------------------
    def ids(self, kind: str) -> list[UUID]:
        _, base = self.app.bases.current_base(self.account_id, self.school.planning_id)
        return list(base.records[kind])

    def record(self, kind: str, record_id: UUID) -> dict[str, Any]:
        _, base = self.app.bases.current_base(self.account_id, self.school.planning_id)
        return dict(base.records[kind][record_id])

    def add(self, login: str, kind: str, fields: dict[str, Any]) -> UUID:
        with acting(f"user:{login}"):
            _, record_id, _ = self.app.bases.add_record(self.account_id, self.school.planning_id, kind, fields)
        self.actions += 1
        return record_id

    def change(self, login: str, kind: str, record_id: UUID, changes: dict[str, Any]) -> None:
        with acting(f"user:{login}"):
            self.app.bases.change_record(self.account_id, self.school.planning_id, kind, record_id, changes)
        self.actions += 1

    def remove(self, login: str, kind: str, record_id: UUID) -> None:
        with acting(f"user:{login}"):
            self.app.bases.remove_record(self.account_id, self.school.planning_id, kind, record_id)
        self.actions += 1

    def pick(self, kind: str) -> UUID | None:
        ids = self.ids(kind)
        return self.rng.choice(ids) if ids else None

    # -- day one: the resources ---------------------------------------------------------------
    def set_up_records(self) -> None:
        """The secretariat enters the resources: subjects, teachers, rooms, classes, students, timetable."""
        who = "secretariat"
        subjects = [self.add(who, "subjects", {"name": n, "short_name": s}) for n, s in SUBJECTS]
        teachers = [self.add(who, "teachers", {"last_name": last, "first_name": first, "civility": civ})
                    for last, first, civ in [("MARTIN", "Sophie", "Mme"), ("BERNARD", "Luc", "M."),
                                             ("LEROY", "Anne", "Mme"), ("GARCIA", "Paulo", "M."),
                                             ("FAURE", "Julie", "Mme"), ("BLANC", "Olivier", "M.")]]
        rooms = [self.add(who, "rooms", {"name": f"Salle {n}", "capacity": 30}) for n in (101, 102, 103, 201, 202)]
        for name, city in (("Boulangerie Lemoine", "Lyon"), ("Garage du Centre", "Villeurbanne")):
            self.add(who, "companies", {"name": name, "city": city})
        for index, (name, level) in enumerate(CLASSES):
            self.clock.advance(timedelta(minutes=7))
            class_id = self.add(who, "classes", {"name": name, "level": level})
            for _ in range(STUDENTS_PER_CLASS):
                self.add_student(class_id, who)
            for slot, weekday in enumerate(("mon", "tue", "thu", "fri")):
                self.add(who, "courses", {
                    "subject_id": subjects[(index + slot) % len(subjects)],
                    "teacher_id": teachers[(index + slot) % len(teachers)], "class_id": class_id,
                    "room_id": rooms[index % len(rooms)], "weekday": weekday,
                    "start": time(8 + slot * 2, 0), "duration_minutes": 55})

    def add_student(self, class_id: UUID, who: str = "secretariat") -> UUID:
        year = 2014 - [lvl for _, lvl in CLASSES].index(self.record("classes", class_id)["level"]) // 2
        return self.add(who, "students", {
            "last_name": self.rng.choice(LAST_NAMES), "first_name": self.rng.choice(FIRST_NAMES),
            "class_id": class_id, "birth_date": date(year, self.rng.randint(1, 12), self.rng.randint(1, 28))})

    # -- the days --------------------------------------------------------------------------------
    def live_until(self, end: datetime) -> None:
        """Hour by hour up to `end`: a few actions in school hours (and some evenings); the
        backup schedule runs every `BACKUPS_EVERY` of the clock and at the end. Each run takes
        what is due since the last one (the 2-hour saves, each with the base's state at its
        boundary, and the midnight archives; at most what retention keeps), then applies
        retention, as the server's scheduler does."""
        hour = self.clock.now().replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        next_run = hour.replace(hour=0) + BACKUPS_EVERY
        while hour <= end:
            school_day = hour.weekday() < 5
            if school_day and hour.hour in SCHOOL_HOURS:
                actions = self.rng.randint(1, 4)
            elif school_day and hour.hour in (19, 20, 21):
                actions = int(self.rng.random() < 0.4)  # a teacher marking in the evening
            else:
                actions = int(self.rng.random() < 0.03)
            for minute in sorted(self.rng.sample(range(60), actions)):
                at = hour + timedelta(minutes=minute, seconds=self.rng.randint(0, 59))
                if at >= end:  # the activity ends now: nothing is stamped in the future
                    break
                self.clock.set(at)
                self.one_action(evening=not (school_day and hour.hour in SCHOOL_HOURS))
            next_hour = hour + timedelta(hours=1)
            self.clock.set(min(next_hour, end))
            if next_hour >= next_run or next_hour > end:
                with acting("scheduler", "127.0.0.1"):
                    self.app.backup_schedule.run_due_backups()
                next_run += BACKUPS_EVERY
            hour = next_hour

    def one_action(self, *, evening: bool) -> None:
        choices: list[tuple[float, Any]] = [
            (6, self.grade), (2, self.change_grade), (0.5, self.remove_grade), (2, self.lesson_log),
            (1.5, self.homework), (1.5, self.evaluation),
        ]
        if not evening:
            choices += [(2.5, self.absence), (1, self.justify_absence), (2, self.lateness), (0.5, self.remove_lateness),
                        (0.3, self.punishment), (0.1, self.sanction), (0.2, self.new_student),
                        (0.1, self.internship), (0.4, self.appraisal)]
        weights, actions = zip(*choices, strict=True)
        action = self.rng.choices(actions, weights)[0]
        try:
            action()
        except CampusError:  # e.g. nothing to change yet: the demo just moves on
            pass

    def _teacher(self) -> str:
        return self.rng.choice(TEACHERS)

    def _today(self) -> date:
        return self.clock.now().date()

    def grade(self) -> None:
        scale = self.rng.choice([Decimal(20), Decimal(20), Decimal(10)])
        value = Decimal(self.rng.randint(0, int(scale) * 2)) / 2
        self.add(self._teacher(), "grades", {"student_id": self.pick("students"), "subject_id": self.pick("subjects"),
                                             "value": str(value), "scale": str(scale), "date": self._today().isoformat(),
                                             "coefficient": self.rng.choice(["1", "1", "2", "0.5"])})

    def change_grade(self) -> None:
        grade_id = self.pick("grades")
        if grade_id is None:
            return
        scale = self.record("grades", grade_id)["scale"]
        value = Decimal(self.rng.randint(0, int(scale) * 2)) / 2
        self.change(self._teacher(), "grades", grade_id, {"value": str(value), "comment": "corrigée"})

    def remove_grade(self) -> None:
        grade_id = self.pick("grades")
        if grade_id is not None:
            self.remove(self._teacher(), "grades", grade_id)

    def lesson_log(self) -> None:
        self.add(self._teacher(), "lesson_logs", {
            "course_id": self.pick("courses"), "date": self._today().isoformat(),
            "content": self.rng.choice(["Chapitre 3 : les fractions", "Correction du contrôle",
                                        "Lecture suivie", "Travaux pratiques", "Exposés des élèves"])})

    def homework(self) -> None:
        given = self._today()
        self.add(self._teacher(), "homework", {
            "subject_id": self.pick("subjects"), "class_id": self.pick("classes"), "given_on": given.isoformat(),
            "due_on": (given + timedelta(days=self.rng.randint(1, 7))).isoformat(),
            "description": self.rng.choice(["Exercices 4 à 7 page 52", "Apprendre la leçon",
                                            "Rédiger un paragraphe argumenté", "Réviser pour le contrôle"])})

    def evaluation(self) -> None:
        self.add(self._teacher(), "evaluations", {
            "student_id": self.pick("students"), "subject_id": self.pick("subjects"),
            "competence": self.rng.choice(["Raisonner", "Communiquer", "Modéliser", "Comprendre un texte"]),
            "level": self.rng.choice(["not_acquired", "in_progress", "acquired", "exceeded"]),
            "date": self._today().isoformat()})

    def appraisal(self) -> None:
        self.add(self._teacher(), "appraisals", {
            "student_id": self.pick("students"), "subject_id": self.pick("subjects"), "period": "Trimestre 1",
            "text": self.rng.choice(["Bon trimestre, continuez ainsi.", "Des efforts à poursuivre.",
                                     "Travail sérieux et régulier."])})

    def absence(self) -> None:
        start = self.clock.now().replace(minute=0, second=0, microsecond=0)
        self.add("vie.scolaire", "absences", {
            "student_id": self.pick("students"), "start": start.isoformat(),
            "end": (start + timedelta(hours=self.rng.randint(1, 4))).isoformat(),
            "reason": self.rng.choice([None, "Malade", "Rendez-vous médical"])} )

    def justify_absence(self) -> None:
        absence_id = self.pick("absences")
        if absence_id is not None and not self.record("absences", absence_id)["justified"]:
            self.change("vie.scolaire", "absences", absence_id, {"justified": True, "reason": "Justificatif reçu"})

    def lateness(self) -> None:
        self.add("vie.scolaire", "lateness", {"student_id": self.pick("students"), "at": self.clock.now().isoformat(),
                                              "minutes": self.rng.randint(2, 25)})

    def remove_lateness(self) -> None:
        lateness_id = self.pick("lateness")
        if lateness_id is not None:
            self.remove("vie.scolaire", "lateness", lateness_id)

    def punishment(self) -> None:
        self.add("vie.scolaire", "punishments", {"student_id": self.pick("students"), "on": self._today().isoformat(),
                                                 "nature": "Retenue", "reason": "Travail non fait"})

    def sanction(self) -> None:
        self.add("direction", "sanctions", {"student_id": self.pick("students"), "on": self._today().isoformat(),
                                            "nature": "Avertissement", "reason": "Comportement"})

    def new_student(self) -> None:
        self.add_student(self.pick("classes"))

    def internship(self) -> None:
        start = self._today() + timedelta(days=14)
        self.add("secretariat", "internships", {"student_id": self.pick("students"),
                                                "company_id": self.pick("companies"), "start": start.isoformat(),
                                                "end": (start + timedelta(days=4)).isoformat()})


def instructions(school: DemoSchool, data_dir: str, snapshots_dir: str, port: int = 8000) -> str:
    """What ``campus demo`` prints: the secrets (shown once), the next command, curl examples."""
    url = f"http://127.0.0.1:{port}"
    planning = f"{url}/v1/console/plannings/{school.planning_id}"
    ten_days_ago = (school.ended - timedelta(days=10)).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    ended = school.ended.replace(microsecond=0).isoformat().replace("+00:00", "Z")
    counts = ", ".join(f"{n} {k}" for k, n in school.counts.items())
    users = "\n".join(f"    {login:<13} {school.passwords[login]:<16} {USERS[login][2].value}, "
                      f"{USERS[login][3].value} on {school.planning_name!r}" for login in USERS)
    login_body = (f'{{"hosting_number": "{school.hosting_number}", "password": "{school.console_password}", '
                  f'"invoice_number": "{school.invoice_number}"}}')
    return f"""campus demo: {ESTABLISHMENT} is ready in {data_dir}
  {school.actions} actions over {DAYS} days ({school.began:%Y-%m-%d %H:%M} to {school.ended:%Y-%m-%d %H:%M} UTC),
  {school.saves} saves and {school.archives} archives in {snapshots_dir}
  the base now holds: {counts}

Log in to the console (shown once, keep them):
  hosting number:   {school.hosting_number}
  console password: {school.console_password}
  invoice number:   {school.invoice_number}
Directory users (domain {school.domain}, planning {school.planning_name!r}):
{users}

Next:
  campus serve --data-dir {data_dir} --snapshots-dir {snapshots_dir}

Then, in another terminal:
  TOKEN=$(curl -s -X POST {url}/v1/console/sessions -H 'Content-Type: application/json' \\
    -d '{login_body}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
  curl -s -H "Authorization: Bearer $TOKEN" {planning}/restore-window
  curl -s -H "Authorization: Bearer $TOKEN" {planning}/backups
  # the base 10 days ago (a preview of a restore: nothing changes)
  curl -s -H "Authorization: Bearer $TOKEN" '{planning}/base?as_of={ten_days_ago}'
  curl -s -H "Authorization: Bearer $TOKEN" '{planning}/base/diff?from={ten_days_ago}&to={ended}'
  # to restore: stop the server, then restore (undo with the "undo" instant of the answer)
  curl -s -X PUT -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \\
    -d '{{"state": "stopped"}}' {planning}/server
  curl -s -X POST -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \\
    -d '{{"as_of": "{ten_days_ago}", "confirm": true, "reason": "trying the demo"}}' {planning}/restores
"""
