"""The web console: server-rendered pages under ``/ui/`` on the HTTP port (docs/console.md).

:mod:`.routes` mounts the pages (the composition root lists it beside the API's route
modules); :mod:`.security` puts the headers on every response and checks the CSRF token of
every form; :mod:`.web` is what every page shares (the signed-in browser, rendering, errors);
:mod:`.gitview` reads repositories with pygit2, bounded; :mod:`.markdown` and
:mod:`.highlight` turn pushed text into HTML that can run nothing; :mod:`.fileview` decides
what a file page shows within its time, with :mod:`.prepare`'s background thread doing (and
keeping) the slow work, and :mod:`.blame` is blame with bounds. Pages read with the one
access rule (:func:`gitserver.policy.access.authorise`): a hidden repository is a missing one.
"""
