"""The HTTP app's routes, one router module per resource.

``page`` (the search page, ``/docs``, the icon), ``items`` (the catalogue's items and
fields, an item's neighbours, the item writes), ``search`` (search by photo, by region,
duplicates) and ``catalogue`` (``/health``, reload, save, sync). Each module builds its
routers for one app's settings; every endpoint reaches the app's
:class:`~visualsim.serve.state.AppState` through the ``app_state`` dependency.
"""
