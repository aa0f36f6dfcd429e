"""Drivers: one package per engine, each implementing :mod:`hexa_event.driver`."""
