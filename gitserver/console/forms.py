"""A form that creates something: what was typed, and the refusal shown next to its field.

The rules are the API's (the ``gitserver.admin`` functions a page calls); this only runs one
of them inside a savepoint, so that a refusal leaves nothing half-written in the request's
transaction, and keeps the refusal with the field it names for the page to show beside it
(``aria-invalid`` and the message, ``templates/form.html``).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, TypeVar

from gitserver.console.web import Page, View
from gitserver.policy.errors import Conflict, Forbidden, GitserverError, InvalidInput

log = logging.getLogger(__name__)

_T = TypeVar("_T")
# The refusals a form answers on its own page; any other error (404, 503…) is the error page,
# but for a 404 naming one of the form's fields (a member's name typed that names nobody).
SHOWN_ON_THE_FORM = (InvalidInput, Conflict, Forbidden)


@dataclasses.dataclass(frozen=True)
class Form:
    """One form of a page: its id (the prefix of its fields' ids), what was typed in each of
    its fields, and the refusal (shown at its field, or at ``main`` when it names none of
    them, e.g. a name already taken)."""

    id: str
    main: str
    values: dict[str, str] = dataclasses.field(default_factory=dict)
    problem: GitserverError | None = None

    @property
    def status(self) -> int:
        """The status of the page that answers the form: its refusal's."""
        return self.problem.status if self.problem is not None else 200

    def value(self, name: str) -> str:
        return self.values.get(name, "")

    def error(self, name: str) -> str:
        """The refusal's message when it belongs to field ``name``, else ""."""
        if self.problem is None:
            return ""
        field = self.problem.field if self.problem.field in self.values else self.main
        return self.problem.message if field == name else ""


def typed(view: View, names: Iterable[str]) -> dict[str, str]:
    return {name: view.form(name) for name in names}


def attempt(view: View, form: Form, action: Callable[[], _T]) -> tuple[_T | None, Form]:
    """Run ``action`` in a savepoint: its result, or None and ``form`` carrying the refusal
    (nothing it wrote is kept)."""
    try:
        with view.session.begin_nested():
            return action(), form
    except GitserverError as exc:
        if not isinstance(exc, SHOWN_ON_THE_FORM) and exc.field not in form.values:
            raise
        return None, dataclasses.replace(form, problem=exc)


def audit(view: View, change: str) -> None:
    """One log line per change made through a console form: who (the signed-in user) did what.
    The rows themselves are the API's (their ids and times); this is the who."""
    log.info("console change by %s: %s", view.principal.display, change,
             extra={"tenant": view.principal.tenant_name, "user": view.principal.user_name})


def done(view: View, change: str, location: str) -> None:
    """A change made: its log line (:func:`audit`), then on to the page that shows it."""
    audit(view, change)
    view.redirect(location)


class CreateForm(Page):
    """A POST that creates one thing through an ``admin`` function: the page's owner (tenant,
    user, repository: its access rule), the form typed, the thing made in a savepoint, and
    either the page again with the refusal beside its field, or on to where it is shown.
    Subclasses name the form (:attr:`FORM`: id, main field, fields), the page that shows it
    (:attr:`show`, given the form as :attr:`SHOWN_AS`), and the other steps."""

    FORM: ClassVar[tuple[str, str, tuple[str, ...]]]
    SHOWN_AS: ClassVar[str]
    show: Callable[..., None]  # a staticmethod: (view, owner, status, **forms)

    def owner(self, view: View, **params: Any) -> Any:
        raise NotImplementedError

    def create(self, view: View, owner: Any, form: Form) -> Any:
        raise NotImplementedError

    def refused(self, view: View, owner: Any, form: Form) -> None:
        self.show(view, owner, form.status, **{self.SHOWN_AS: form})

    def made(self, view: View, owner: Any, made: Any) -> None:
        raise NotImplementedError

    def post(self, view: View, **params: Any) -> None:
        owner = self.owner(view, **params)
        form_id, main, fields = self.FORM
        form = Form(form_id, main, typed(view, fields))
        made, form = attempt(view, form, lambda: self.create(view, owner, form))
        if made is None:
            self.refused(view, owner, form)
            return
        self.made(view, owner, made)
