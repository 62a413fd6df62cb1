"""Schedules of [app.schedule]: cron's syntax or systemd's calendar form, read into one shape.

A schedule becomes a systemd timer's OnCalendar= lines on a systemd host and a cron line elsewhere
(and on the local target), so each form is read into a Calendar (the sets of seconds, minutes,
hours, days, months and weekdays it fires at) and written out in the other form. What one form
cannot say is refused with the reason: cron fires at most once a minute, and its day-of-month and
day-of-week fields, both restricted, mean either (systemd's mean both). `fab status` computes the
next run of a cron schedule from the same Calendar.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

FIELDS = {"second": (0, 59), "minute": (0, 59), "hour": (0, 23), "day": (1, 31), "month": (1, 12), "weekday": (0, 6)}
MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")  # cron's 0 is Sunday
SYSTEMD_DAYS = ("Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat")
MACROS = {"@hourly": "0 * * * *", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@weekly": "0 0 * * 0",
          "@monthly": "0 0 1 * *", "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *"}
# systemd.time(7)'s shorthands, as its normalized form.
SHORTHANDS = {"minutely": "*-*-* *:*:00", "hourly": "*-*-* *:00:00", "daily": "*-*-* 00:00:00",
              "weekly": "Mon *-*-* 00:00:00", "monthly": "*-*-01 00:00:00", "yearly": "*-01-01 00:00:00",
              "annually": "*-01-01 00:00:00", "quarterly": "*-01,04,07,10-01 00:00:00",
              "semiannually": "*-01,07-01 00:00:00"}


class ScheduleError(ValueError):
    """A schedule cannot be read, or cannot be said in the form a target needs; the text says why."""


@dataclass(frozen=True)
class Calendar:
    second: frozenset[int]
    minute: frozenset[int]
    hour: frozenset[int]
    day: frozenset[int]
    month: frozenset[int]
    weekday: frozenset[int]  # 0 = Sunday
    # Both day and weekday are restricted and a day matching either fires (cron's rule); else both must match.
    either_day: bool = False

    def full(self, field: str) -> bool:
        low, high = FIELDS[field]
        return getattr(self, field) == frozenset(range(low, high + 1))

    def fires_on(self, day: datetime) -> bool:
        on_day, on_weekday = day.day in self.day, (day.isoweekday() % 7) in self.weekday
        return day.month in self.month and ((on_day or on_weekday) if self.either_day else (on_day and on_weekday))


def parse(text: str) -> Calendar:
    """A schedule in cron's syntax (5 fields, or @daily and the like) or systemd's calendar form."""
    text = text.strip()
    if text.startswith("@") or re.fullmatch(r"(\S+\s+){4}\S+", text):
        return parse_cron(text)
    return parse_calendar(text)


def parse_cron(text: str) -> Calendar:
    if text == "@reboot":
        raise ScheduleError("@reboot is not a schedule: a command that runs from boot is an [app.processes] entry")
    fields = MACROS.get(text, text).split()
    if len(fields) != 5 or text.startswith("@") and text not in MACROS:
        raise ScheduleError(f"{text!r} is not a cron schedule: 5 fields (minute hour day month weekday), "
                            f"or one of {', '.join(MACROS)}")
    minute, hour, day, month, weekday = (
        values(f, name, names) for f, name, names in zip(fields, ("minute", "hour", "day", "month", "weekday"),
                                                         (None, None, None, MONTHS, WEEKDAYS)))
    restricted = fields[2] != "*" and fields[4] != "*"
    return Calendar(frozenset({0}), minute, hour, day, month, weekday, either_day=restricted)


def values(text: str, field: str, names: tuple[str, ...] | None, range_mark: str = "-") -> frozenset[int]:
    """The numbers a cron field (or, with range_mark "..", a systemd component) stands for."""
    low, high = FIELDS[field]
    top = 7 if field == "weekday" else high  # cron and systemd both let 7 be Sunday
    found = set()
    for item in text.split(","):
        match = re.fullmatch(rf"(\*|(\w+)(?:{re.escape(range_mark)}(\w+))?)(?:/(\d+))?", item)
        if not match:
            raise ScheduleError(f"{item!r} in {text!r} is not a {field}")
        start, end = (low, top) if match.group(1) == "*" else (
            number(match.group(2), field, names), number(match.group(3) or match.group(2), field, names))
        if match.group(4) and not match.group(3) and match.group(1) != "*":
            end = top  # a/step: from a to the end
        step = int(match.group(4) or 1)
        if not low <= start <= end <= top or step < 1:
            raise ScheduleError(f"{item!r} is outside the {field}s {low}-{top}")
        found |= {v % 7 if field == "weekday" else v for v in range(start, end + 1, step)}
    return frozenset(found)


def number(text: str, field: str, names: tuple[str, ...] | None) -> int:
    if text.isdigit():
        return int(text)
    lower = text.lower()[:3]
    if names and lower in names and text.isalpha():
        return names.index(lower) + (1 if names is MONTHS else 0)
    raise ScheduleError(f"{text!r} is not a {field}")


def parse_calendar(text: str) -> Calendar:
    """systemd's calendar form: [weekdays] [*-month-day | year-month-day] [hour:minute[:second]],
    or a shorthand (daily, hourly, ...). Time zones and the last-day ~ are not taken."""
    normalized = SHORTHANDS.get(text.lower(), text)
    parts = normalized.split()
    weekday = frozenset(range(7))
    if parts and re.fullmatch(r"[A-Za-z][A-Za-z.,]*", parts[0]):
        try:
            weekday = values(parts.pop(0), "weekday", WEEKDAYS, "..")
        except ScheduleError:
            raise ScheduleError(f"{text!r} is not a cron schedule (5 fields) nor a systemd calendar form (such "
                                'as "daily", "Mon..Fri 09:00" or "*-*-* *:0/15")') from None
    date, time = "*-*-*", "00:00:00"
    for part in parts:
        if "-" in part:
            date = part
        elif ":" in part:
            time = part
        else:
            raise ScheduleError(f"{text!r} is not a cron schedule (5 fields) nor a systemd calendar "
                                'form (such as "daily", "Mon..Fri 09:00" or "*-*-* *:0/15")')
    pieces = date.split("-")
    if len(pieces) == 2:
        pieces.insert(0, "*")
    if len(pieces) != 3 or "~" in date:
        raise ScheduleError(f"{date!r} in {text!r}: the date must be [year-]month-day (no ~)")
    if pieces[0] != "*":
        raise ScheduleError(f"{text!r} names a year: a schedule repeats every year (use * for it)")
    clock = time.split(":")
    if len(clock) == 2:
        clock.append("00")
    if len(clock) != 3:
        raise ScheduleError(f"{time!r} in {text!r}: the time must be hour:minute[:second]")
    try:
        hour, minute = (values(v, f, None, "..") for v, f in zip(clock[:2], ("hour", "minute")))
        second = values(clock[2], "second", None, "..")
        month, day = values(pieces[1], "month", None, ".."), values(pieces[2], "day", None, "..")
    except ScheduleError as exc:
        raise ScheduleError(f"{text!r}: {exc}") from None
    return Calendar(second, minute, hour, day, month, weekday)


def compact(numbers: frozenset[int], field: str, range_mark: str, names: tuple[str, ...] | None = None) -> str:
    """A set of numbers as few items as a field allows: *, start/step to the end, ranges and lists."""
    low, high = FIELDS[field]
    if numbers == frozenset(range(low, high + 1)):
        return "*"
    ordered = sorted(numbers)
    if names is None and len(ordered) > 2:
        step = ordered[1] - ordered[0]
        if ordered == list(range(ordered[0], high + 1, step)) and step > 1:  # cron: a range with a step
            return (f"{ordered[0]}/{step}" if range_mark == ".." else
                    f"*/{step}" if ordered[0] == low else f"{ordered[0]}-{high}/{step}")
    show = (lambda v: names[v]) if names else str
    items, start = [], 0
    for i in range(1, len(ordered) + 1):
        if i == len(ordered) or ordered[i] != ordered[i - 1] + 1:
            run = ordered[start:i]
            items.append(f"{show(run[0])}{range_mark}{show(run[-1])}" if len(run) > 2 else ",".join(map(show, run)))
            start = i
    return ",".join(items)


def to_systemd(calendar: Calendar) -> list[str]:
    """OnCalendar= values (two when cron's either-day rule needs a union of them)."""
    def line(day: frozenset[int], weekday: frozenset[int]) -> str:
        days = "" if weekday == frozenset(range(7)) else compact(weekday, "weekday", "..", SYSTEMD_DAYS) + " "
        two = lambda values, field: compact(values, field, "..") if len(values) > 1 else f"{min(values):02d}"
        return (f"{days}*-{two(calendar.month, 'month')}-{two(day, 'day')} "
                f"{two(calendar.hour, 'hour')}:{two(calendar.minute, 'minute')}:{two(calendar.second, 'second')}")
    if calendar.either_day:
        return [line(calendar.day, frozenset(range(7))), line(frozenset(range(1, 32)), calendar.weekday)]
    return [line(calendar.day, calendar.weekday)]


def to_cron(calendar: Calendar, text: str) -> str:
    """cron's five fields; refuses what cron cannot say (text: the schedule as given, for the message)."""
    if calendar.second != frozenset({0}):
        raise ScheduleError(f"{text!r} fires at seconds other than :00, and this target runs schedules with cron "
                            "(at most once a minute): give a schedule by the minute, or use a systemd host")
    if not calendar.either_day and not calendar.full("day") and calendar.weekday != frozenset(range(7)):
        raise ScheduleError(f"{text!r} restricts both the day of the month and the weekday, which cron would "
                            "read as either one: this target runs schedules with cron, so give only one of them")
    return " ".join((compact(calendar.minute, "minute", "-"), compact(calendar.hour, "hour", "-"),
                     compact(calendar.day, "day", "-"), compact(calendar.month, "month", "-"),
                     compact(calendar.weekday, "weekday", "-")))


def next_run(calendar: Calendar, after: datetime) -> datetime | None:
    """The first time after `after` (the target's local time) the schedule fires; None: not within 5 years."""
    day = after.replace(hour=0, minute=0, second=0, microsecond=0)
    for _ in range(366 * 5):
        if calendar.fires_on(day):
            for hour in sorted(calendar.hour):
                for minute in sorted(calendar.minute):
                    for second in sorted(calendar.second):
                        when = day.replace(hour=hour, minute=minute, second=second)
                        if when > after:
                            return when
        day += timedelta(days=1)
    return None
