"""The Repour-compatible surface: what PNC's Repour (and Reqour) clients call, served by gitserver.

Modules, from the HTTP edge down (docs/architecture.md has the flow of an ``/adjust``):

* :mod:`~gitserver.repour.resources`: the falcon resources (``/clone``, ``/adjust``,
  ``/internal-scm``, ``/cancel``, ``/git-external-to-internal``, ``/version``) and their
  OpenAPI description; :mod:`~gitserver.repour.schema`: the request bodies;
  :mod:`~gitserver.repour.reqour`: Reqour's spelling of the same requests;
  :mod:`~gitserver.repour.internal_scm`: repository creation for ``/internal-scm``.
* :mod:`~gitserver.repour.operations`: clone and adjust themselves;
  :mod:`~gitserver.repour.gitwork`: git in a temporary repository and the push into an
  internal one; :mod:`~gitserver.repour.giturl`: URL parsing and the origin policy;
  :mod:`~gitserver.repour.localorigin`: local origins checked as git opens them;
  :mod:`~gitserver.repour.adjust`: the alignment tools; :mod:`~gitserver.repour.command`: the
  supervised command runner; :mod:`~gitserver.repour.results`: result files and error bodies.
* :mod:`~gitserver.repour.inline`: synchronous runs under an API-held lease;
  :mod:`~gitserver.repour.job`: the ``repour`` job (callback mode);
  :mod:`~gitserver.repour.records`: the Pipeline rows; :mod:`~gitserver.repour.callbacks` and
  :mod:`~gitserver.repour.tokens`: result delivery and its service-account token;
  :mod:`~gitserver.repour.bifrost`: the alignment log upload.
"""
