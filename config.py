"""Charger-side configuration, as the FlexiCharge charger reads it.

Set ``_useMockServer = True`` to point the charger at the mock server on
this machine.  The mock server reads ``_mockServerIP`` from this file for its
own default host and port, so both sides always agree.
"""


class Configurations:
    def __init__(self):
        self._useMockServer = True
        self._mockServerIP = 'ws://127.0.0.1:60003'

        self._iPAddress = "ws://18.202.253.30:1337/charger/"
        self._chargerSerialNumber = "testnumber13"

        self._protocols = ['ocpp1.6']
        self._pingInterval = 5  # Websocket ping interval in seconds.
        self._timeout = None  # Websocket timeout in seconds.

    def getServerAddress(self):
        """The websocket URL the charger connects to."""
        if self._useMockServer:
            return self._mockServerIP
        return self._iPAddress + self._chargerSerialNumber
