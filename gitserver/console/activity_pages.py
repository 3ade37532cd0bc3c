"""The pages of what happened to a repository: pushes (the ledger), pipelines with their
steps and a live log (polled by the page's script), cancel, and webhook deliveries with
redeliver. Reads need read access; cancel needs write, webhooks admin, as in the API."""

from __future__ import annotations

from sqlalchemy import select

from gitserver.admin import audit
from gitserver.console.repo_pages import granted, page_values
from gitserver.console.web import Page, View
from gitserver.db import models
from gitserver.pipelines import jobs, outbox
from gitserver.policy import access
from gitserver.policy.errors import Conflict, NotFound

PAGE_ROWS = 50
LOG_PIECE = 256 * 1024
TEXT_PLAIN = "text/plain; charset=utf-8"
# The live log's answer names where to ask next and the pipeline's status in headers, so the
# body is the log's bytes exactly as stored (shown with textContent: never parsed as HTML).
OFFSET_HEADER = "X-Log-Offset"
STATUS_HEADER = "X-Pipeline-Status"
MAX_ID = 2147483647


def _before(view: View) -> int | None:
    """``?before=ID``: the page of rows older than that id (newest first)."""
    text = view.param("before")
    return int(text) if text.isdigit() and 0 < int(text) <= MAX_ID else None


class Pushes(Page):
    def get(self, view: View, tenant: str, repo: str) -> None:
        opened = granted(view, tenant, repo)
        query = audit.pushes_query(opened.row, state="all")
        before = _before(view)
        if before is not None:
            query = query.where(models.Push.id < before)
        rows = list(view.session.scalars(query.order_by(models.Push.id.desc()).limit(PAGE_ROWS + 1)))
        users = {u.id: u for u in view.session.scalars(
            select(models.User).where(models.User.id.in_({p.user_id for p in rows if p.user_id})))}
        pipelines = {p.push_id: p for p in view.session.scalars(
            select(models.Pipeline).where(models.Pipeline.push_id.in_([p.id for p in rows])))}
        view.render("pushes.html", **page_values(
            view, opened, pushes=rows[:PAGE_ROWS], users=users, pipelines=pipelines,
            next_before=rows[PAGE_ROWS - 1].id if len(rows) > PAGE_ROWS else None))


class Pipelines(Page):
    def get(self, view: View, tenant: str, repo: str) -> None:
        opened = granted(view, tenant, repo)
        query = select(models.Pipeline).where(models.Pipeline.repo_id == opened.row.id)
        before = _before(view)
        if before is not None:
            query = query.where(models.Pipeline.id < before)
        rows = list(view.session.scalars(query.order_by(models.Pipeline.id.desc()).limit(PAGE_ROWS + 1)))
        view.render("pipelines.html", **page_values(
            view, opened, pipelines=rows[:PAGE_ROWS],
            next_before=rows[PAGE_ROWS - 1].id if len(rows) > PAGE_ROWS else None))


def _pipeline(view: View, opened_repo: models.Repository, pipeline_id: int) -> models.Pipeline:
    row = view.session.get(models.Pipeline, pipeline_id) if 0 < pipeline_id <= MAX_ID else None
    if row is None or row.repo_id != opened_repo.id:
        raise NotFound(f"pipeline {pipeline_id} not found in {opened_repo.full_name}")
    return row


class Pipeline(Page):
    def get(self, view: View, tenant: str, repo: str, pipeline_id: int) -> None:
        opened = granted(view, tenant, repo)
        row = _pipeline(view, opened.row, pipeline_id)
        data, offset = jobs.read_log(view.session, row.id, 0, LOG_PIECE)
        view.render("pipeline.html", **page_values(
            view, opened, pipeline=row, log=data.decode("utf-8", "replace"), offset=offset,
            final=row.status in models.FINAL_STATES,
            can_cancel=access.at_least(opened.permission, access.WRITE)))


class PipelineLog(Page):
    """``?offset=N``: the log from N; the page's script polls it until the status is final."""

    def get(self, view: View, tenant: str, repo: str, pipeline_id: int) -> None:
        opened = granted(view, tenant, repo)
        row = _pipeline(view, opened.row, pipeline_id)
        text = view.param("offset", "0")
        offset = int(text) if text.isdigit() and len(text) < 19 else 0
        data, next_offset = jobs.read_log(view.session, row.id, offset, LOG_PIECE)
        view.resp.content_type = TEXT_PLAIN
        view.resp.set_header(OFFSET_HEADER, str(next_offset))
        view.resp.set_header(STATUS_HEADER, row.status)
        view.resp.data = data


class CancelPipeline(Page):
    def post(self, view: View, tenant: str, repo: str, pipeline_id: int) -> None:
        opened = granted(view, tenant, repo, access.WRITE)
        row = _pipeline(view, opened.row, pipeline_id)
        jobs.request_cancel(view.session, row)
        view.redirect(f"{opened.base}/pipelines/{row.id}")


class Webhooks(Page):
    def get(self, view: View, tenant: str, repo: str) -> None:
        opened = granted(view, tenant, repo, access.ADMIN)
        hooks = list(view.session.scalars(select(models.Webhook).where(models.Webhook.repo_id == opened.row.id)
                                          .order_by(models.Webhook.id)))
        deliveries = list(view.session.scalars(
            select(models.Delivery).where(models.Delivery.webhook_id.in_([h.id for h in hooks]))
            .order_by(models.Delivery.id.desc()).limit(PAGE_ROWS)))
        view.render("webhooks.html", **page_values(view, opened, hooks=hooks, deliveries=deliveries))


class Redeliver(Page):
    def post(self, view: View, tenant: str, repo: str, delivery_id: int) -> None:
        opened = granted(view, tenant, repo, access.ADMIN)
        delivery = view.session.get(models.Delivery, delivery_id) if 0 < delivery_id <= MAX_ID else None
        hook = view.session.get(models.Webhook, delivery.webhook_id) if delivery and delivery.webhook_id else None
        if delivery is None or hook is None or hook.repo_id != opened.row.id:
            raise NotFound(f"delivery {delivery_id} not found in {opened.row.full_name}")
        if not hook.active:
            raise Conflict(f"webhook {hook.id} is inactive; activate it before redelivering")
        outbox.redeliver(view.session, delivery)
        view.redirect(f"{opened.base}/webhooks")

