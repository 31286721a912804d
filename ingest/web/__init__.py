"""The web layer: aiohttp app, handlers, middleware. Nothing of aiohttp passes below it."""
