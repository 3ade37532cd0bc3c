"""REST resources. Each module exposes ``add_routes(app, ctx)``; app.py lists them."""
