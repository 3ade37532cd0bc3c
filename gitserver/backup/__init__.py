"""Online backup and restore of a whole gitserver: database, repositories and host keys.

``format`` is the archive's layout (pure), ``database`` the two backends' snapshot and restore,
``repos`` one repository's objects and refs, ``run`` the two commands that tie them together.
"""
