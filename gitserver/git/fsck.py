"""Which of git's fsck findings a pushed or fetched history may carry.

Every pack the server receives (``receive.fsckObjects``) or fetches for ``/clone``
(``transfer.fsckObjects``) is checked by git in strict mode, where any finding refuses the
whole pack. Real histories carry cosmetic findings that older git versions and other tools
wrote, e.g. psf/requests has a 2011 commit with the time zone ``+051800`` (``badTimezone``).
An archive of upstream code must accept those, as GitLab (Gitaly) and GitHub do; the history
cannot be rewritten to fix them.

Only findings about how an author, committer or tagger line or a file mode is spelled are
relaxed here (git-fsck(1), "FSCK MESSAGES"; Gitaly disables ``badTimezone``,
``missingSpaceBeforeDate`` and ``zeroPaddedFilemode``). Everything else stays an error, above
all the security checks (``.gitmodules`` names, urls and paths, ``.git`` entries in trees,
``..`` entries): those objects are what exploits of git clients are made of.

``warn`` lets the pack in and tells the pusher which object has the oddity (``remote:
warning: object …: badTimezone: …``); ``ignore`` stays silent, for findings that can repeat
once per tree in an affected history.
"""

from __future__ import annotations

WARN = "warn"
IGNORE = "ignore"

# git's message id -> severity while receiving or fetching.
BENIGN_FINDINGS = {
    "badTimezone": WARN,             # "+051800": a bug in some git versions' date parsing
    "missingSpaceBeforeDate": WARN,  # "<a@b>1300000000 +0000", or no date at all
    "badDate": WARN,                 # unparsable or zero-padded date
    "badDateOverflow": WARN,         # date beyond what git's integer holds
    "zeroPaddedDate": WARN,
    "missingEmail": WARN,            # identities written by svn/cvs importers
    "badEmail": WARN,
    "badName": WARN,
    "missingNameBeforeEmail": WARN,
    "missingSpaceBeforeEmail": WARN,
    "multipleAuthors": WARN,
    "nulInCommit": WARN,             # NUL in a commit message (e.g. UTF-16 encoded messages)
    "zeroPaddedFilemode": IGNORE,    # "040000" trees written by old git; one per tree
}


def settings(section: str) -> dict[str, str]:
    """``{"<section>.<id>": severity}`` for git's ``-c``; section is ``receive.fsck``,
    ``fetch.fsck`` or ``fsck``."""
    return {f"{section}.{finding}": severity for finding, severity in BENIGN_FINDINGS.items()}


RECEIVE_SETTINGS = settings("receive.fsck")
FETCH_SETTINGS = settings("fetch.fsck")
FSCK_SETTINGS = settings("fsck")
