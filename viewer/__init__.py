"""The web map: folium pages served by the API."""
