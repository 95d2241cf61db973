"""Listeners: turn datagrams and TCP frames into Query objects and send back the replies."""
