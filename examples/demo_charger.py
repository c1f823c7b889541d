#!/usr/bin/env python3
"""A small simulated OCPP 1.6-J (or 2.0.1) charge point, for demos and tests of the mock server.

    python examples/demo_charger.py [ws://127.0.0.1:60003/CP-1] [--flexicharge] [--once]
    python examples/demo_charger.py [ws://127.0.0.1:60003/CP-1] --ocpp 2.0.1 [--once]

It boots, accepts the BootData, reports its connector Available, heartbeats,
accepts RemoteStartTransaction, sends StartTransaction, then MeterValues every
second (energy, power and state of charge rising) until RemoteStopTransaction,
which it ends with StopTransaction.  It answers every command of the mock
server's console with a schema-valid reply, and behaves as a charger does:
a Reset reboots it (it disconnects, connects and boots again), an idTag the
server does not accept ends the transaction at once (DeAuthorized), a full
battery stops drawing power (SuspendedEV, 0 W) until the transaction is
stopped, and a connector that is preparing or charging refuses another
RemoteStartTransaction.

``--flexicharge`` speaks the FlexiCharge charger's dialect instead: 4-element
replies, one message id reused for its CALLs, string connectorIds, its own
MeterValues ``values`` form, and ``transactionID`` in RemoteStopTransaction.

``--ocpp 2.0.1`` speaks OCPP 2.0.1 (subprotocol ocpp2.0.1) instead: BootNotification, a
StatusNotification per EVSE and connector, Authorize, and on RequestStartTransaction a
transaction of TransactionEvents (Started, Updated with the meter every --meter-interval, Ended
on RequestStopTransaction) with its own transactionId and seqNo; it answers every CSMS message
of 2.0.1 with a schema-valid reply, from a small device model (GetVariables, SetVariables,
GetBaseReport and GetReport with NotifyReport in parts; the monitoring report, display messages
and customer information come in parts too).

Security profiles: ``--password`` logs in with HTTP Basic (profiles 1 and 2); a ``wss://`` URL is
TLS, trusting ``--ca-file`` (profile 2), with ``--client-cert``/``--client-key`` (profile 3).
Under 2.0.1 it keeps SetNetworkProfile's connection data and applies an accepted SetVariables of
SecurityCtrlr.BasicAuthPassword or SecurityCtrlr.SecurityProfile (higher only, to a kept network
profile of that profile) by sending SecurityEventNotification and connecting again with them.
Asked for a certificate (ExtendedTriggerMessage SignChargePointCertificate; 2.0.1:
TriggerMessage SignChargingStationCertificate or SignV2GCertificate) it makes a key and a CSR
for its own charge point id with the openssl command; the certificates it holds are named by
their real hash data (as the server computes it).  GetLog uploads its diagnostics for
DiagnosticsLog, its security log for SecurityLog.

--misbehave works in both versions;
bad-transition (the 1.6 status diagram) is 1.6 only, the TransactionEvent and 2.0.1 status ones
(repeat-seqno and the others after it in MISBEHAVIOURS) are 2.0.1 only.
Standard library and websockets only, like the server (and the openssl command, for a CSR).
"""

import argparse
import asyncio
import base64
import binascii
import datetime
import hashlib
import json
import os
import re
import ssl
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
from typing import Any, Optional

try:
    import websockets
except ImportError:
    sys.stderr.write("demo_charger needs the websockets package: activate the server's "
                     "venv in this "
                     "terminal too (. .venv/bin/activate), or pip install websockets\n")
    raise SystemExit(2) from None

# --misbehave: rules a good charger keeps, broken on purpose (the server's behaviour checks catch
# each).
MISBEHAVIOURS = ("skip-boot-wait", "meter-backwards", "bad-transition", "fast-heartbeat",
                 "two-calls", "repeat-seqno", "skip-seqno", "updated-before-started",
                 "started-twice", "available-while-charging", "repeat-status", "no-offline-flag",
                 "replay-reversed")
# The misbehaviours one version only has: {switch: the version it needs}.
MISBEHAVIOUR_VERSIONS = dict({"bad-transition": "1.6"}, **{
    name: "2.0.1" for name in MISBEHAVIOURS[MISBEHAVIOURS.index("repeat-seqno"):]})
DIAGNOSTICS_FILE = "demo-diagnostics.log"
LOG_FILE = "demo-security.log"
# The certificate signing requests it sends (SignCertificate) are made by the openssl command, for
# its own charge point id, with a new key, as a real charger makes them; openssl may take this long.
OPENSSL_SECONDS = 10.0
CSR_ORGANIZATION = "Demo Charger"
FLEXICHARGE_MESSAGE_ID = "0jdsEnnyo2kpCP8FLfHlNpbvQXosR5ZNlh8v"  # it reuses this id for every CALL


def now_iso() -> str:
    moment = datetime.datetime.now(datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{(moment.microsecond // 1000):03d}Z"


def say(text: str) -> None:
    print("%s demo-charger %s" % (time.strftime("%H:%M:%S"), text), flush=True)


class _NoLock:
    """--misbehave two-calls: a lock that does not hold anything back."""

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: Any) -> None:
        return None


_NO_LOCK = _NoLock()


class Station:
    """What outlives a connection: the meter, the open transaction, and the transaction messages
    kept while the server is away (sent in order, with their own timestamps, once it is back)."""

    def __init__(self) -> None:
        self.energy_wh = 0
        self.power_w = 0  # what the meter reads now: 7400 W while charging, else 0
        self.soc = 20  # state of charge, percent: rises while charging, never falls
        # a Reset was accepted: connect and boot again, whatever --reconnect says
        self.rebooting = False
        self.transaction_id: Any = None  # 1.6: the server's int; 2.0.1: the charger's own string
        self.seq_no = 0  # 2.0.1: the next TransactionEvent's seqNo in the open transaction
        self.charging_state: Optional[str] = None  # 2.0.1: the chargingState last reported
        self.boot_reason = "PowerUp"  # 2.0.1: RemoteReset after an accepted Reset
        self.meter_task: Optional[asyncio.Task[None]] = None
        self.charger: Optional[DemoCharger] = None  # the connection now, if any
        self.queued: list[tuple[str, dict]] = []
        self.starting = False  # a RemoteStart accepted, its StartTransaction not answered yet
        self.suspended = False  # the battery is full: SuspendedEV, 0 W, until the transaction stops
        self.network_profiles: dict = {}  # 2.0.1: configurationSlot -> SetNetworkProfile's data
        self.misbehaved: set = set()  # the --misbehave switches that break their rule once, done


def misbehave_once(station: Station, options: argparse.Namespace, name: str) -> bool:
    """True the first time only, when --misbehave ``name`` is given."""
    if name not in options.misbehave or name in station.misbehaved:
        return False
    station.misbehaved.add(name)
    return True


class DemoCharger:
    """One connection of the simulated charge point (one connector), speaking OCPP 1.6."""

    expects_boot_data = True  # the mock server sends its FlexiCharge BootData to 1.6 chargers
    format_error = "FormationViolation"  # the CALLERROR for a payload it cannot read

    def __init__(self, websocket: Any, options: argparse.Namespace, station: "Station") -> None:
        self.ws = websocket
        self.options = options
        self.flexicharge = options.flexicharge
        self.connector = options.connector
        self.pending: dict[str, asyncio.Future[Any]] = {}
        self.call_lock = asyncio.Lock()  # one outstanding CALL at a time (OCPP-J 4.1.1)
        self.boot_data = asyncio.Event()
        self.booted = asyncio.Event()  # the BootNotification's answer is in (and said)
        self.gone = asyncio.Event()  # the connection has ended: every wait races this
        self.station = station
        self.misbehave = set(options.misbehave)
        # booted, and what was kept while the server was away is sent
        self.caught_up = asyncio.Event()
        self.configuration = {"HeartbeatInterval": str(options.heartbeat_interval or 60),
                              "MeterValueSampleInterval": str(options.meter_interval)}
        self.local_list_version = 0
        self.certificates: dict[str, list] = {}  # certificate type -> the PEM texts installed
        self.csr: Optional[str] = None  # the certificate signing request made for its own id
        self.csr_key: Optional[str] = None  # and its private key
        self.finished = asyncio.Event()
        self.tasks: set = set()
        self.meter_sends: set = set()  # the meter's messages on their way (see meter_sent)

    # -- the charger's own CALLs

    async def call(self, action: str, payload: dict) -> Any:
        """Send a CALL and wait for its reply payload (None on CALLERROR or no reply in 30 s).

        ServerGone when the connection ends first.
        """
        async with self.call_lock if "two-calls" not in self.misbehave else _NO_LOCK:
            message_id = FLEXICHARGE_MESSAGE_ID if self.flexicharge else str(uuid.uuid4())
            reply = asyncio.get_running_loop().create_future()
            self.pending[message_id] = reply
            try:
                await self.ws.send(json.dumps([2, message_id, action, payload]))
                return await self.until(reply, 30, "the reply to " + action)
            finally:
                self.pending.pop(message_id, None)

    async def until(self, awaitable: Any, timeout: float, what: str) -> Any:
        """Wait for ``awaitable``, but no longer than the connection lasts, nor ``timeout``
        seconds."""
        task = asyncio.ensure_future(awaitable)
        gone = asyncio.ensure_future(self.gone.wait())
        try:
            await asyncio.wait([task, gone], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if task.done():
            return task.result()
        task.cancel()
        if self.gone.is_set():
            raise ServerGone(f"the connection ended while waiting for {what}")
        say("no %s within %g s" % (what, timeout))
        return None

    def spawn(self, coroutine: Any) -> "asyncio.Task[Any]":
        """Run a follow-up (a StartTransaction after RemoteStart, say) beside the receiver."""
        task = asyncio.ensure_future(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self._forget)
        return task

    async def meter_sent(self) -> None:
        """Wait for the meter's messages on their way: the transaction's end comes after them (a
        2.0.1 Updated after its Ended, a 1.6 MeterValues stamped before its StopTransaction but
        sent after, would break the order the server checks)."""
        sending = [task for task in self.meter_sends if not task.done()]
        if sending:
            await asyncio.gather(*sending, return_exceptions=True)

    def _forget(self, task: "asyncio.Task[Any]") -> None:
        self.tasks.discard(task)
        error = None if task.cancelled() else task.exception()
        # run() reports a closed connection once
        if error is not None and not isinstance(error, ServerGone):
            say(f"{type(error).__name__}: {error}")

    # -- the charging session

    async def run(self) -> bool:
        """Boot and serve until --once is done (True) or the server closes the connection
        (False)."""
        receiver = asyncio.ensure_future(self.receive())
        try:
            boot = await self.boot()
            interval = self.options.heartbeat_interval or (boot or {}).get("interval") or 60
            accepted = (boot or {}).get("status") == "Accepted"
            if self.expects_boot_data and self.options.wait_boot_data and accepted:
                await self.until(self.boot_data.wait(), 30, "the BootData DataTransfer")
            await self.send_queued()
            status = "Available" if self.station.transaction_id is None else \
                "SuspendedEV" if self.station.suspended else "Charging"  # back mid-session?
            if "two-calls" in self.misbehave:  # both at once, not one after the other
                await asyncio.gather(self.status(status), self.call("Heartbeat", {}))
            elif not self.station.starting:  # a start accepted meanwhile reports Preparing itself
                await self.status(status)
            if "bad-transition" in self.misbehave:
                # Available -> Finishing: the status diagram has no such step
                await self.status("Finishing")
                await self.status("Available")
            if "repeat-status" in self.misbehave:  # the same status again, unasked
                await self.status(status, again=True)
            self.spawn(self.heartbeats(interval / 4 if "fast-heartbeat" in self.misbehave
                                       else interval))
            await self.until(self.finished.wait(), float("inf"), "the end of the session")
            return True
        except ServerGone:
            return False
        finally:
            for task in list(self.tasks) + [receiver]:
                task.cancel()

    async def boot(self) -> Any:
        """BootNotification until Accepted, waiting the interval the server gives between tries."""
        while True:
            boot = await self.call("BootNotification", self.boot_payload())
            say(f"booted: {json.dumps(boot)}")
            self.booted.set()
            if (not isinstance(boot, dict) or boot.get("status") == "Accepted"
                    or "skip-boot-wait" in self.misbehave):
                return boot
            await self.pause(max(1, boot.get("interval") or 10))

    def boot_payload(self) -> dict:
        return {"chargePointVendor": "DemoVendor", "chargePointModel": "DemoCharger",
                "chargePointSerialNumber": "demo-001", "firmwareVersion": "1.0.0"}

    async def pause(self, seconds: float) -> None:
        """Wait ``seconds`` (the boot interval, say); ServerGone when the connection ends first."""
        try:
            await asyncio.wait_for(self.gone.wait(), seconds)
        except asyncio.TimeoutError:
            return
        raise ServerGone("the connection ended")

    async def send_queued(self) -> None:
        """The transaction messages kept while the server was away, in order, as they were made."""
        if self.station.queued:
            say(f"server back: sending {len(self.station.queued)} message(s) kept while it was "
                "away")
            if "replay-reversed" in self.misbehave:  # the newest first: out of order
                self.station.queued.reverse()
        while self.station.queued:  # what the meter makes meanwhile joins the end of the queue
            action, payload = self.station.queued[0]
            await self.call(action, payload)
            self.station.queued.pop(0)
        self.caught_up.set()

    async def transaction_message(self, action: str, payload: dict) -> Any:
        """A transaction message: sent now, or kept for when the server is back."""
        try:
            if self.gone.is_set():
                raise ServerGone("the connection has ended")
            return await self.call(action, payload)
        except (ServerGone, websockets.ConnectionClosed):
            keep(self.station, action, payload, self.options)
            say(f"server away: {action} kept to send later")
            return None

    async def heartbeats(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            await self.call("Heartbeat", {})

    async def status(self, status: str, again: bool = False) -> None:
        if self.flexicharge:
            payload = {"connectorId": str(self.connector), "errorCode": "", "status": status}
        else:
            payload = {"connectorId": self.connector, "errorCode": "NoError", "status": status,
                       "timestamp": now_iso()}
        await self.call("StatusNotification", payload)

    async def suspended_ev(self) -> None:
        """The battery is full: the car draws no more power."""
        await self.status("SuspendedEV")

    @staticmethod
    def meter_message(station: "Station", options: argparse.Namespace) -> tuple:
        """The periodic message of the meter while charging: (action, payload)."""
        return "MeterValues", meter_payload(station, options)

    def start_payload(self, id_tag: str) -> dict:
        meter = self.station.energy_wh
        if self.flexicharge:
            return {"connectorId": str(self.connector), "id_tag": None, "meterStart": meter,
                    "timestamp": time.time(), "reservationId": None}
        return {"connectorId": self.connector, "idTag": id_tag, "meterStart": meter,
                "timestamp": now_iso()}

    async def start_transaction(self, id_tag: str) -> None:
        self.station.starting = True  # until StartTransaction is answered (or the connection ends)
        try:
            await self.status("Preparing")
            reply = await self.call("StartTransaction", self.start_payload(id_tag))
        finally:
            self.station.starting = False
        transaction_id = reply.get("transactionId") if isinstance(reply, dict) else None
        if not isinstance(transaction_id, int) or isinstance(transaction_id, bool):
            say(f"StartTransaction got no transaction id (reply: {json.dumps(reply)}); "
                "not charging")
            await self.status("Available")
            return
        self.station.transaction_id = transaction_id
        info = reply.get("idTagInfo")
        status = info.get("status", "Accepted") if isinstance(info, dict) else "Accepted"
        if status != "Accepted":  # OCPP 1.6 4.8: stop at once, the idTag is not authorized
            say("transaction %d not started: idTag %s is %s; stopping it (DeAuthorized)"
                % (transaction_id, id_tag, status))
            await self.stop_transaction("DeAuthorized")
            return
        say(f"transaction {transaction_id} started")
        self.station.power_w = 7400
        await self.status("Charging")
        self.station.meter_task = asyncio.ensure_future(meter_values(self.station, self.options))

    def meter_payload(self) -> dict:
        return meter_payload(self.station, self.options)

    async def stop_transaction(self, reason: str, finish: bool = True) -> None:
        # they go first
        await self.until(self.caught_up.wait(), 60, "the messages kept while the server was away")
        if self.station.meter_task is not None:
            self.station.meter_task.cancel()
            self.station.meter_task = None
        await self.meter_sent()
        self.station.power_w = 0
        self.station.suspended = False
        await self.status("Finishing")
        payload = {"transactionId": self.station.transaction_id,
                   "meterStop": self.station.energy_wh, "reason": reason}
        if self.flexicharge:
            payload.update({"idTag": None, "timestamp": time.time(), "transactionData": None})
        else:
            payload.update({"idTag": self.options.id_tag, "timestamp": now_iso()})
        await self.call("StopTransaction", payload)
        say(f"transaction {self.station.transaction_id} stopped")
        self.station.transaction_id = None
        await self.status("Available")
        if self.options.once and finish:
            self.finished.set()

    # -- frames from the server

    async def receive(self) -> None:
        """Handle the server's frames until the connection ends; then every wait ends too."""
        try:
            async for text in self.ws:
                try:
                    message = json.loads(text)
                except ValueError:
                    say(f"ignored a frame that is not JSON: {text[:80]!r}")
                    continue
                if not isinstance(message, list) or len(message) < 3:
                    say(f"ignored a frame that is not OCPP-J: {text[:80]!r}")
                elif message[0] == 2 and len(message) == 4:
                    await self.answer(message[1], message[2], message[3]
                                      if isinstance(message[3], dict) else {})
                elif message[0] in (3, 4) and isinstance(message[1], str):
                    reply = self.pending.get(message[1])
                    if reply is not None and not reply.done():
                        reply.set_result(message[-1] if message[0] == 3 else None)
        except websockets.ConnectionClosed:
            pass
        finally:
            self.gone.set()

    def handler_for(self, action: str) -> Any:
        """The method that answers the server's ``action`` (None: not implemented)."""
        return getattr(self, "on_" + action, None)

    async def answer(self, message_id: str, action: str, payload: dict) -> None:
        handler = self.handler_for(action)
        if handler is None:
            await self.ws.send(json.dumps([4, message_id, "NotImplemented", "demo charger: no "
                                           + action, {}]))
            return
        try:
            reply = handler(payload)
        except (AttributeError, KeyError, TypeError, ValueError) as exc:  # a payload it cannot read
            say(f"could not read {action} {json.dumps(payload)[:80]}: {exc!r}")
            await self.ws.send(json.dumps([4, message_id, self.format_error,
                                           f"demo charger: cannot read {action}", {}]))
            return
        if reply is None:  # the FlexiCharge charger answers some requests with silence
            return
        frame = [3, message_id, action, reply] if self.flexicharge else [3, message_id, reply]
        await self.ws.send(json.dumps(frame))

    # One on_<Action> per server command: the reply payload (follow-ups are spawned).

    def on_DataTransfer(self, payload: dict) -> dict:
        if payload.get("messageId") == "BootData":
            self.spawn(self.got_boot_data(payload.get("data")))
        return {"status": "Accepted"}

    async def got_boot_data(self, data: Any) -> None:
        """Said after "booted": the BootData arrives before the boot's answer has been handled."""
        await self.booted.wait()
        say(f"BootData: {data}")
        self.boot_data.set()

    def on_RemoteStartTransaction(self, payload: dict) -> Optional[dict]:
        id_tag = payload.get("idTag")
        if self.flexicharge:
            try:
                accepted = int(id_tag) == 1  # the only idTag the FlexiCharge charger accepts
            except (TypeError, ValueError):
                say(f"RemoteStartTransaction idTag {id_tag!r} is not a number: no reply, "
                    f"as FlexiCharge")
                return None
        else:
            accepted = True
        busy = self.station.transaction_id is not None or self.station.starting
        if accepted and busy:  # as a real charger: one start at a time, none during a transaction
            say("RemoteStartTransaction refused: connector %d is %s" % (
                self.connector, "preparing" if self.station.starting else "charging"))
        accepted = accepted and not busy
        if accepted:
            self.station.starting = True  # at once: a second start arriving now is refused
            self.spawn(self.start_transaction(str(id_tag)))
        return {"status": "Accepted" if accepted else "Rejected"}

    def on_RemoteStopTransaction(self, payload: dict) -> dict:
        transaction_id = payload.get("transactionID" if self.flexicharge else "transactionId")
        if self.station.transaction_id is None or transaction_id != self.station.transaction_id:
            return {"status": "Rejected"}
        self.spawn(self.stop_transaction("Remote"))
        return {"status": "Accepted"}

    def on_Reset(self, payload: dict) -> dict:
        kind = str(payload.get("type"))
        self.spawn(self.reboot("HardReset" if kind == "Hard" else "SoftReset",
                               f"{kind.lower()} reset"))
        return {"status": "Accepted"}

    async def reboot(self, stop_reason: str, what: str) -> None:
        """Reset: end the transaction (for ``stop_reason``), close the connection, boot again."""
        await asyncio.sleep(0.1)  # the Reset.conf goes out first
        if self.station.transaction_id is not None:
            await self.stop_transaction(stop_reason, finish=False)
        say(f"rebooting ({what})")
        self.station.rebooting = True
        self.station.boot_reason = "RemoteReset"
        await self.ws.close(1012, "rebooting")  # 1012: service restart

    def on_ChangeAvailability(self, payload: dict) -> dict:
        return {"status": "Accepted"}

    def on_ChangeConfiguration(self, payload: dict) -> dict:
        self.configuration[str(payload.get("key"))] = str(payload.get("value"))
        return {"status": "Accepted"}

    def on_GetConfiguration(self, payload: dict) -> dict:
        wanted = payload.get("key") or list(self.configuration)
        known = [key for key in wanted if key in self.configuration]
        reply: dict = {"configurationKey": [{"key": key, "readonly": False,
                                             "value": self.configuration[key]}
                                            for key in known]}
        unknown = [key for key in wanted if key not in self.configuration]
        if unknown:
            reply["unknownKey"] = unknown
        return reply

    def on_ClearCache(self, payload: dict) -> dict:
        return {"status": "Accepted"}

    def on_ClearChargingProfile(self, payload: dict) -> dict:
        return {"status": "Accepted"}

    def on_SetChargingProfile(self, payload: dict) -> dict:
        return {"status": "Accepted"}

    def on_GetCompositeSchedule(self, payload: dict) -> dict:
        return {"status": "Accepted", "connectorId": payload.get("connectorId", self.connector),
                "scheduleStart": now_iso(), "chargingSchedule": {
                    "chargingRateUnit": payload.get("chargingRateUnit", "A"),
                    "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 16.0}]}}

    def on_GetDiagnostics(self, payload: dict) -> dict:
        location = str(payload.get("location", ""))
        if location.startswith("http"):
            self.spawn(self.upload_diagnostics(location))
        return {"fileName": DIAGNOSTICS_FILE}

    def on_GetLocalListVersion(self, payload: dict) -> dict:
        return {"listVersion": self.local_list_version}

    def on_SendLocalList(self, payload: dict) -> dict:
        if isinstance(payload.get("listVersion"), int):
            self.local_list_version = payload["listVersion"]
        return {"status": "Accepted"}

    def on_ReserveNow(self, payload: dict) -> dict:
        if self.station.transaction_id is not None or self.station.starting:
            return {"status": "Occupied"}  # as a charger with its one connector in use answers
        self.spawn(self.status("Reserved"))
        return {"status": "Accepted"}

    def on_CancelReservation(self, payload: dict) -> dict:
        self.spawn(self.status("Available"))
        return {"status": "Accepted"}

    def on_TriggerMessage(self, payload: dict) -> dict:
        requested = payload.get("requestedMessage")
        if requested == "StatusNotification":
            self.spawn(self.status("Charging" if self.station.transaction_id is not None
                                   else "Available"))
        elif requested == "Heartbeat":
            self.spawn(self.call("Heartbeat", {}))
        elif requested == "MeterValues":
            self.spawn(self.call("MeterValues", self.meter_payload()))
        else:
            return {"status": "NotImplemented"}
        return {"status": "Accepted"}

    def on_UnlockConnector(self, payload: dict) -> dict:
        return {"status": "Unlocked"}

    def on_UpdateFirmware(self, payload: dict) -> dict:
        location = str(payload.get("location", ""))
        if location.startswith("http"):
            self.spawn(self.download_firmware(location))
        return {}

    # The security whitepaper's commands: a small certificate store that Install, GetInstalledIds
    # and Delete agree on, with hash data computed as OCPP defines it (and the server does).

    def installed(self) -> list:
        """Every PEM text it holds, of every type (the issuers its hash data may need)."""
        return [pem for texts in self.certificates.values() for pem in texts]

    def hash_of(self, pem: str) -> dict:
        return hash_data(pem, self.installed())

    async def request_signing(self, payload: dict) -> None:
        """SignCertificate with ``payload`` and a CSR for its own charge point id, made with a new
        key the first time it is needed on this connection (the key kept, as a charger keeps it)."""
        if self.csr is None:
            try:
                self.csr_key, self.csr = await make_csr(
                    urllib.parse.unquote(station_identity(self.options)))  # as the server reads it
            except RuntimeError as exc:
                say(f"cannot make a certificate signing request: {exc}")
                return
        await self.call("SignCertificate", dict(payload, csr=self.csr))

    def on_CertificateSigned(self, payload: dict) -> dict:
        chain = str(payload.get("certificateChain", ""))
        try:
            hash_data(chain)
        except ValueError:
            return {"status": "Rejected"}
        self.certificates["ChargePointCertificate"] = [chain]
        return {"status": "Accepted"}

    def on_InstallCertificate(self, payload: dict) -> dict:
        certificate = str(payload.get("certificate", ""))
        try:
            hash_data(certificate)
        except ValueError:
            return {"status": "Rejected"}
        installed = self.certificates.setdefault(str(payload.get("certificateType")), [])
        if certificate not in installed:
            installed.append(certificate)
        return {"status": "Accepted"}

    def on_GetInstalledCertificateIds(self, payload: dict) -> dict:
        installed = self.certificates.get(str(payload.get("certificateType")), [])
        if not installed:
            return {"status": "NotFound"}
        return {"status": "Accepted",
                "certificateHashData": [self.hash_of(pem) for pem in installed]}

    def on_DeleteCertificate(self, payload: dict) -> dict:
        wanted = payload.get("certificateHashData", {})
        for installed in self.certificates.values():
            for pem in installed:
                if same_certificate(self.hash_of(pem), wanted):
                    installed.remove(pem)
                    return {"status": "Accepted"}
        return {"status": "NotFound"}

    def on_ExtendedTriggerMessage(self, payload: dict) -> dict:
        requested = payload.get("requestedMessage")
        if requested == "SignChargePointCertificate":
            self.spawn(self.request_signing({}))
        elif requested in ("StatusNotification", "Heartbeat", "MeterValues"):
            return {"status": self.on_TriggerMessage(payload)["status"]}
        elif requested == "BootNotification":
            self.spawn(self.call("BootNotification", {"chargePointVendor": "DemoVendor",
                                                      "chargePointModel": "DemoCharger"}))
        elif requested == "LogStatusNotification":
            self.spawn(self.call("LogStatusNotification", {"status": "Idle"}))
        elif requested == "FirmwareStatusNotification":
            self.spawn(self.call("SignedFirmwareStatusNotification", {"status": "Idle"}))
        else:
            return {"status": "NotImplemented"}
        return {"status": "Accepted"}

    def on_GetLog(self, payload: dict) -> dict:
        location = str((payload.get("log") or {}).get("remoteLocation", ""))
        name, text = self.log_file(payload.get("logType"))
        if location.startswith("http"):
            self.spawn(self.upload_log(location, payload.get("requestId"), name, text))
        return {"status": "Accepted", "filename": name}

    def on_SignedUpdateFirmware(self, payload: dict) -> dict:
        location = str((payload.get("firmware") or {}).get("location", ""))
        if location.startswith("http"):
            self.spawn(self.download_signed_firmware(location, payload.get("requestId")))
        return {"status": "Accepted"}

    # -- files: diagnostics up, firmware down, over HTTP as many chargers do (others only speak FTP)

    async def upload_diagnostics(self, location: str) -> None:
        await self.call("DiagnosticsStatusNotification", {"status": "Uploading"})
        name, text = self.log_file("DiagnosticsLog")
        done = await self.upload(location, name, text, "upload diagnostics to")
        await self.call("DiagnosticsStatusNotification",
                        {"status": "Uploaded" if done else "UploadFailed"})

    def log_file(self, log_type: Any) -> tuple:
        """The log GetLog asks for, (file name, text): the security log for SecurityLog, the
        diagnostics for DiagnosticsLog."""
        if log_type == "SecurityLog":
            return LOG_FILE, "demo charger security log\n"
        return DIAGNOSTICS_FILE, (f"demo charger diagnostics\nenergy {self.station.energy_wh} Wh, "
                                  f"state of charge {self.station.soc} %\n")

    async def upload_log(self, location: str, request_id: Any, name: str, text: str) -> None:
        await self.call("LogStatusNotification", {"status": "Uploading", "requestId": request_id})
        done = await self.upload(location, name, text, "upload its log to")
        await self.call("LogStatusNotification", {"status": "Uploaded" if done else "UploadFailure",
                                                  "requestId": request_id})

    async def upload(self, location: str, name: str, text: str, what: str) -> bool:
        """POST a file to ``location`` as multipart/form-data, as chargers upload; True when it
        arrived."""
        boundary = uuid.uuid4().hex
        body = ("--%s\r\nContent-Disposition: form-data; name=\"file\"; filename=\"%s\"\r\n"
                "Content-Type: text/plain\r\n\r\n%s\r\n--%s--\r\n"
                % (boundary, name, text, boundary))
        request = urllib.request.Request(location, data=body.encode("utf-8"), method="POST",
                                         headers={
            "Content-Type": "multipart/form-data; boundary=" + boundary})
        return await self.fetch(request, what) is not None

    async def download_firmware(self, location: str) -> None:
        await self.call("FirmwareStatusNotification", {"status": "Downloading"})
        status = await self.fetch(urllib.request.Request(location), "download firmware from")
        downloaded = "Downloaded" if status is not None else "DownloadFailed"
        await self.call("FirmwareStatusNotification", {"status": downloaded})

    async def download_signed_firmware(self, location: str, request_id: Any,
                                       action: str = "SignedFirmwareStatusNotification") -> None:
        """Download and say how it went with ``action`` (2.0.1: FirmwareStatusNotification)."""
        await self.call(action, {"status": "Downloading", "requestId": request_id})
        body = await self.fetch(urllib.request.Request(location), "download signed firmware from")
        downloaded = "Downloaded" if body is not None else "DownloadFailed"
        await self.call(action, {"status": downloaded, "requestId": request_id})

    async def fetch(self, request: "urllib.request.Request", what: str) -> Optional[bytes]:
        """The body of an HTTP request made on a thread, or None (said why) when it fails."""
        def run() -> bytes:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.read()
        try:
            body = await asyncio.get_running_loop().run_in_executor(None, run)
        except (OSError, ValueError) as exc:
            say(f"could not {what} {request.full_url}: {exc}")
            return None
        say(f"did {what} {request.full_url} ({len(body)} bytes back)")
        return body


def der_element(der: bytes, offset: int) -> tuple:
    """The DER element at ``offset``: its tag, where its content starts, and where it ends."""
    tag, length = der[offset], der[offset + 1]
    start = offset + 2
    if length & 0x80:
        count = length & 0x7F
        length, start = int.from_bytes(der[start:start + count], "big"), start + count
    if start + length > len(der):
        raise ValueError("a DER element runs past the end")
    return tag, start, start + length


PEM_CERTIFICATE = re.compile(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----\s*", re.S)


def certificate_fields(pem: str) -> tuple:
    """The DER issuer name, subject name, public key (the BIT STRING's bits) and serial number
    bytes of one PEM certificate (as the server reads them); ValueError for text that is not one."""
    try:
        body = "".join(line for line in pem.strip().splitlines() if not line.startswith("-----"))
        der = base64.b64decode(body, validate=True)
        _, tbs_start, _ = der_element(der, 0)  # Certificate
        _, position, _ = der_element(der, tbs_start)  # tbsCertificate's content
        tag, start, end = der_element(der, position)
        if tag == 0xA0:  # [0] version
            tag, start, end = der_element(der, end)
        serial = der[start:end].lstrip(b"\0") or b"\0"
        _, _, position = der_element(der, end)  # signature algorithm
        _, _, issuer_end = der_element(der, position)
        _, _, subject_at = der_element(der, issuer_end)  # validity
        _, _, subject_end = der_element(der, subject_at)
        _, key_info, _ = der_element(der, subject_end)  # subjectPublicKeyInfo
        _, _, key_at = der_element(der, key_info)  # its algorithm
        _, key_start, key_end = der_element(der, key_at)  # the key, a BIT STRING
    except (IndexError, ValueError, binascii.Error) as exc:
        raise ValueError("not a PEM certificate (%s)" % exc) from None
    return (der[position:issuer_end], der[subject_at:subject_end], der[key_start + 1:key_end],
            serial)


def hash_data(pem: str, known: Any = ()) -> dict:
    """The CertificateHashDataType of a PEM certificate (the first of ``pem``), as OCPP defines it
    and the server computes it: issuerNameHash, the SHA-256 of its issuer's DER name;
    issuerKeyHash, of its issuer's public key (that of the next certificate of ``pem``, else of one
    of the PEM texts ``known`` whose subject is its issuer, else its own); serialNumber in hex
    without leading zeroes.  ValueError for text that is not a certificate."""
    blocks = PEM_CERTIFICATE.findall(pem) or [pem]
    issuer, _, key, serial = certificate_fields(blocks[0])
    others = blocks[1:] + [block for text in known for block in PEM_CERTIFICATE.findall(text)]
    for other in others:
        _, subject, other_key, _ = certificate_fields(other)
        if subject == issuer:
            key = other_key
            break
    return {"hashAlgorithm": "SHA256", "issuerNameHash": hashlib.sha256(issuer).hexdigest(),
            "issuerKeyHash": hashlib.sha256(key).hexdigest(),
            "serialNumber": serial.hex().lstrip("0") or "0"}


def same_certificate(hash_data_a: Any, hash_data_b: Any) -> bool:
    """Whether two CertificateHashDataType name the same certificate (hex in either case)."""
    fields = ("hashAlgorithm", "issuerNameHash", "issuerKeyHash", "serialNumber")
    return isinstance(hash_data_a, dict) and isinstance(hash_data_b, dict) and all(
        str(hash_data_a.get(name, "")).lower() == str(hash_data_b.get(name, "")).lower()
        for name in fields)


async def make_csr(charge_point_id: str) -> tuple:
    """A new EC P-256 key and a certificate signing request whose CN is ``charge_point_id``, made
    by the openssl command: (key PEM, CSR PEM); RuntimeError with openssl's words when it fails."""
    subject = "/CN=%s/O=%s" % (re.sub(r"([/\\+=,])", r"\\\1", charge_point_id),
                               CSR_ORGANIZATION)
    with tempfile.TemporaryDirectory() as folder:
        key_path = os.path.join(folder, "charger.key")
        try:
            process = await asyncio.create_subprocess_exec(
                "openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                "-nodes", "-keyout", key_path, "-subj", subject, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        except OSError as exc:
            raise RuntimeError("cannot run openssl: %s" % (exc.strerror or exc)) from None
        try:
            csr, said = await asyncio.wait_for(process.communicate(), OPENSSL_SECONDS)
        except asyncio.TimeoutError:
            process.kill()
            await process.wait()
            raise RuntimeError("openssl took over %g s" % OPENSSL_SECONDS) from None
        if process.returncode != 0:
            words = said.decode("utf-8", "replace").strip().splitlines()
            raise RuntimeError("openssl req failed: %s" % (
                words[-1] if words else "exit %d" % process.returncode))
        with open(key_path, encoding="ascii") as key_file:
            return key_file.read(), csr.decode("ascii")


def meter_payload(station: Station, options: argparse.Namespace) -> dict:
    """What the meter reads now; a transactionId only inside a transaction."""
    if options.flexicharge:
        payload: dict = {"connectorId": options.connector, "timestamp": int(time.time() * 1000),
                         "values": {
            "chargingPercent": {"value": station.soc, "unit": "%", "measurand": "SoC"},
            "chargingPower": {"value": station.power_w, "unit": "W",
                              "measurand": "Power.Active.Import"},
            "chargedSoFar": {"value": station.energy_wh, "unit": "Wh",
                             "measurand": "Energy.Active.Import"}}}
    else:
        payload = {"connectorId": options.connector,
                   "meterValue": [{"timestamp": now_iso(), "sampledValue": [
            {"value": str(station.energy_wh), "measurand": "Energy.Active.Import.Register",
             "unit": "Wh"},
            {"value": str(station.power_w), "measurand": "Power.Active.Import", "unit": "W"},
            {"value": str(station.soc), "measurand": "SoC", "unit": "Percent"}]}]}
    if station.transaction_id is not None:
        payload["transactionId"] = station.transaction_id
    return payload


async def meter_values(station: Station, options: argparse.Namespace) -> None:
    """MeterValues every --meter-interval while charging, connected or not (kept while the server is
    away)."""
    samples = 0
    while True:
        await asyncio.sleep(options.meter_interval)
        if station.power_w:
            station.energy_wh += int(station.power_w * options.meter_interval / 3600) + 1
        samples += 1
        if samples == 2 and "meter-backwards" in options.misbehave:
            station.energy_wh -= 5  # a meter that goes back: a real charger must never report this
        station.soc = min(100, station.soc + 1)
        if station.soc == 100 and not station.suspended:  # full: the car stops drawing power
            station.suspended, station.power_w = True, 0
            say("battery full: SuspendedEV, 0 W until the transaction is stopped")
            if station.charger is not None and not station.charger.gone.is_set():
                station.charger.spawn(station.charger.suspended_ev())
        action, payload = CHARGERS[options.ocpp].meter_message(station, options)
        charger = station.charger
        if (charger is not None and charger.caught_up.is_set() and not station.queued
            and not charger.gone.is_set()):
            sending = charger.spawn(charger.transaction_message(action, payload))
            charger.meter_sends.add(sending)
            sending.add_done_callback(charger.meter_sends.discard)
        else:
            keep(station, action, payload, options)
            say(f"server away: {action} kept to send later")


def keep(station: Station, action: str, payload: dict, options: argparse.Namespace) -> None:
    """Keep a transaction message for when the server is back (a 2.0.1 TransactionEvent says it
    happened offline)."""
    if action == "TransactionEvent" and "no-offline-flag" not in options.misbehave:
        payload["offline"] = True
    station.queued.append((action, payload))


# -- OCPP 2.0.1 (--ocpp 2.0.1): the same charge point, its own messages (DemoCharger201) and its own
# answers to the CSMS (V201Requests). One EVSE with one connector.

EVSE_ID = 1
HEARTBEAT_POLL = 0.25  # seconds: how soon a HeartbeatInterval set by SetVariables takes effect
# 1.6 connector statuses (what the session above reports) as a 2.0.1 connectorStatus.
CONNECTOR_STATUS_201 = {"Available": "Available", "Preparing": "Occupied", "Charging": "Occupied",
                        "SuspendedEV": "Occupied", "Finishing": "Occupied",
                        "Reserved": "Reserved", "Unavailable": "Unavailable", "Faulted": "Faulted"}
# stoppedReason -> the triggerReason of the TransactionEvent Ended
STOP_TRIGGERS_201 = {"Remote": "RemoteStop", "DeAuthorized": "Deauthorized",
                     "ImmediateReset": "ResetCommand"}


def meter_value_201(station: Station, context: str = "Sample.Periodic") -> dict:
    """What the meter reads now, as a 2.0.1 MeterValueType."""
    readings = (("Energy.Active.Import.Register", station.energy_wh, "Wh"),
                ("Power.Active.Import", station.power_w, "W"), ("SoC", station.soc, "Percent"))
    return {"timestamp": now_iso(), "sampledValue": [
        {"value": value, "context": context, "measurand": measurand,
         "unitOfMeasure": {"unit": unit}} for measurand, value, unit in readings]}


def transaction_event(station: Station, options: argparse.Namespace, event_type: str,
                      trigger: str, context: str = "Sample.Periodic") -> dict:
    """A TransactionEvent of the open transaction, with the meter inside; it takes the next
    seqNo."""
    info: dict = {"transactionId": station.transaction_id}
    if event_type != "Ended":
        info["chargingState"] = station.charging_state
    payload = {"eventType": event_type, "timestamp": now_iso(), "triggerReason": trigger,
               "seqNo": station.seq_no, "transactionInfo": info,
               "evse": {"id": EVSE_ID, "connectorId": options.connector},
               "meterValue": [meter_value_201(station, context)]}
    station.seq_no += 1
    if station.seq_no == 3 and misbehave_once(station, options, "repeat-seqno"):
        station.seq_no = 2  # the next event has this one's seqNo again
    if station.seq_no == 5 and "skip-seqno" in options.misbehave:
        station.seq_no = 6  # seqNo 5 never comes
    return payload


class DemoCharger201(DemoCharger):
    """The connection speaking OCPP 2.0.1: the session of DemoCharger, with the messages of 2.0.1
    (the answers to the CSMS are V201Requests')."""

    expects_boot_data = False
    format_error = "FormatViolation"

    def __init__(self, websocket: Any, options: argparse.Namespace, station: "Station") -> None:
        super().__init__(websocket, options, station)
        self.boot_reason, station.boot_reason = station.boot_reason, "PowerUp"
        self.requests = V201Requests(self)
        self.connector_status: Optional[str] = None  # the last one reported on this connection
        self.reset_when_idle = False  # a Reset OnIdle came during the transaction

    def handler_for(self, action: str) -> Any:
        return getattr(self.requests, "on_" + action, None)

    def boot_payload(self, reason: str = "") -> dict:
        return {"reason": reason or self.boot_reason, "chargingStation": {
            "model": "DemoCharger", "vendorName": "DemoVendor", "firmwareVersion": "1.0.0",
            "serialNumber": "demo-001"}}

    async def boot(self) -> Any:
        """BootNotification until Accepted; its interval is OCPPCommCtrlr.HeartbeatInterval."""
        boot = await super().boot()
        interval = boot.get("interval") if isinstance(boot, dict) else None
        if isinstance(interval, int) and interval > 0 and not self.options.heartbeat_interval:
            self.requests.variables[("OCPPCommCtrlr", "HeartbeatInterval")][0] = str(interval)
        return boot

    async def status(self, status: str, again: bool = False) -> None:
        """StatusNotification of the connector, when its 2.0.1 status changed (or ``again``)."""
        connector_status = CONNECTOR_STATUS_201[status]
        if connector_status == self.connector_status and not again:
            return
        self.connector_status = connector_status
        await self.call("StatusNotification", {
            "timestamp": now_iso(), "connectorStatus": connector_status, "evseId": EVSE_ID,
            "connectorId": self.connector})

    async def suspended_ev(self) -> None:
        """Nothing at once: the next TransactionEvent Updated says SuspendedEV."""

    async def heartbeats(self, interval: float) -> None:
        """Heartbeat every OCPPCommCtrlr.HeartbeatInterval seconds (the boot's interval until
        SetVariables changes it; --heartbeat-interval overrides both)."""
        variable = self.requests.variables[("OCPPCommCtrlr", "HeartbeatInterval")]
        last = time.monotonic()
        while True:
            await asyncio.sleep(min(interval, HEARTBEAT_POLL))
            seconds = self.options.heartbeat_interval or max(1, int(variable[0]))
            if "fast-heartbeat" in self.misbehave:
                seconds /= 4
            if time.monotonic() - last >= seconds:
                last = time.monotonic()
                await self.call("Heartbeat", {})

    @staticmethod
    def meter_message(station: "Station", options: argparse.Namespace) -> tuple:
        """TransactionEvent Updated with the meter; ChargingStateChanged when it has."""
        state = "SuspendedEV" if station.suspended else "Charging"
        trigger = "MeterValuePeriodic" if state == station.charging_state else \
            "ChargingStateChanged"
        station.charging_state = state
        return "TransactionEvent", transaction_event(station, options, "Updated", trigger)

    async def authorize(self, id_token: dict) -> bool:
        """Authorize the idToken; True when the CSMS accepts it."""
        reply = await self.call("Authorize", {"idToken": id_token})
        info = reply.get("idTokenInfo") if isinstance(reply, dict) else None
        status = info.get("status") if isinstance(info, dict) else None
        if status != "Accepted":
            say(f"idToken {id_token.get('idToken')} is {status}: not starting")
        return status == "Accepted"

    async def start_transaction(self, id_token: Any, remote_start_id: Any = None) -> None:
        """Authorize, then TransactionEvent Started (its own transactionId), and the meter."""
        station = self.station
        station.starting = True  # until the Started event is answered (or the connection ends)
        try:
            if self.requests.authorize_remote_start() and not await self.authorize(id_token):
                return
            await self.status("Preparing")
            station.transaction_id, station.seq_no = str(uuid.uuid4()), 0
            station.power_w, station.charging_state = 7400, "Charging"
            if "updated-before-started" in self.misbehave:
                await self.transaction_message("TransactionEvent", transaction_event(
                    station, self.options, "Updated", "ChargingStateChanged"))
            payload = transaction_event(station, self.options, "Started", "RemoteStart",
                                        "Transaction.Begin")
            payload["idToken"] = id_token
            if isinstance(remote_start_id, int):
                payload["transactionInfo"]["remoteStartId"] = remote_start_id
            reply = await self.transaction_message("TransactionEvent", payload)
        finally:
            station.starting = False
        info = reply.get("idTokenInfo") if isinstance(reply, dict) else None
        status = info.get("status", "Accepted") if isinstance(info, dict) else "Accepted"
        if status != "Accepted":  # E05: the CSMS did not accept the idToken after all
            say("transaction %s: idToken %s is %s; stopping it (DeAuthorized)"
                % (station.transaction_id, id_token.get("idToken"), status))
            await self.stop_transaction("DeAuthorized")
            return
        say(f"transaction {station.transaction_id} started")
        await self.misbehave_in_transaction(payload)
        station.meter_task = asyncio.ensure_future(meter_values(station, self.options))
        self.requests.transaction_started()

    async def misbehave_in_transaction(self, started: dict) -> None:
        """--misbehave started-twice and available-while-charging, once the transaction runs."""
        if "started-twice" in self.misbehave:
            again = transaction_event(self.station, self.options, "Started", "RemoteStart",
                                      "Transaction.Begin")
            again["idToken"] = started.get("idToken")
            await self.transaction_message("TransactionEvent", again)
        if "available-while-charging" in self.misbehave:
            await self.status("Available")
            await self.status("Charging")

    async def stop_transaction(self, reason: str, finish: bool = True) -> None:
        """TransactionEvent Ended with ``reason`` as its stoppedReason."""
        await self.until(self.caught_up.wait(), 60, "the messages kept while the server was away")
        station = self.station
        if station.meter_task is not None:
            station.meter_task.cancel()
            station.meter_task = None
        await self.meter_sent()
        station.power_w, station.suspended, station.charging_state = 0, False, None
        payload = transaction_event(station, self.options, "Ended",
                                    STOP_TRIGGERS_201.get(reason, "StopAuthorized"),
                                    "Transaction.End")
        payload["transactionInfo"]["stoppedReason"] = reason
        await self.transaction_message("TransactionEvent", payload)
        say(f"transaction {station.transaction_id} stopped")
        station.transaction_id = None
        await self.status("Available")
        if self.reset_when_idle:
            self.spawn(self.reboot("ImmediateReset", "reset when idle"))
        elif self.options.once and finish:
            self.finished.set()

    def current_status(self) -> str:
        if self.station.transaction_id is not None or self.station.starting:
            return "Charging"
        return "Available"


# The device model behind GetVariables, SetVariables, GetBaseReport and GetReport:
# (component, variable) -> [value, mutability, dataType].
def device_model_201(options: argparse.Namespace) -> dict:
    return {
        ("OCPPCommCtrlr", "HeartbeatInterval"):
            [str(int(options.heartbeat_interval or 60)), "ReadWrite", "integer"],
        ("SecurityCtrlr", "SecurityProfile"):
            [str(security_profile(options)), "ReadOnly", "integer"],
        ("SecurityCtrlr", "Identity"): [options.url.rstrip("/").rsplit("/", 1)[-1][:48],
                                        "ReadOnly", "string"],
        ("AuthCtrlr", "AuthorizeRemoteStart"): ["true", "ReadWrite", "boolean"],
        ("SampledDataCtrlr", "TxUpdatedInterval"):
            [str(max(1, round(options.meter_interval))), "ReadWrite", "integer"],
        ("SampledDataCtrlr", "TxUpdatedMeasurands"):
            ["Energy.Active.Import.Register,Power.Active.Import,SoC", "ReadWrite", "MemberList"],
        ("TxCtrlr", "EVConnectionTimeOut"): ["120", "ReadWrite", "integer"],
        ("LocalAuthListCtrlr", "Enabled"): ["true", "ReadWrite", "boolean"],
        ("EVSE", "AvailabilityState"): ["Available", "ReadOnly", "OptionList"],
    }


# Components that are an EVSE's: reported with its evse (the demo has one EVSE)
EVSE_OF = {"EVSE": {"evse": {"id": 1}}}
# GetCertificateIdUseEnumType: what GetInstalledCertificateIds reports when asked for all
CERTIFICATE_USES_201 = ["V2GRootCertificate", "MORootCertificate", "CSMSRootCertificate",
                        "V2GCertificateChain", "ManufacturerRootCertificate"]
REPORT_ITEMS_PER_MESSAGE = 3  # NotifyReport parts: the report comes in several (tbc, seqNo)
TEXT_PER_ITEM = 10  # characters of NotifyCustomerInformation's data per item: it comes in parts


class V201Answers:
    """What the answers to the CSMS share: the connection, and follow-up messages in parts."""

    def __init__(self, charger: DemoCharger201) -> None:
        self.charger = charger
        self.station = charger.station

    def follow_up(self, action: str, payload: dict) -> None:
        """Send ``action`` after the answer (a report, a status notification)."""
        self.charger.spawn(self.charger.call(action, payload))

    async def in_parts(self, action: str, request_id: Any, key: str, items: Any,
                       numbered: bool = True) -> None:
        """``action`` with ``items`` (a list, or a text) under ``key``, a few per message, with
        tbc (and seqNo and generatedAt when ``numbered``: NotifyDisplayMessages has neither)."""
        size = REPORT_ITEMS_PER_MESSAGE * (TEXT_PER_ITEM if isinstance(items, str) else 1)
        parts = [items[start:start + size] for start in range(0, len(items), size)] or [[]]
        for seq_no, part in enumerate(parts):
            payload = {"requestId": request_id, "tbc": seq_no < len(parts) - 1}
            if numbered:
                payload.update(generatedAt=now_iso(), seqNo=seq_no)
            if part:
                payload[key] = part
            await self.charger.call(action, payload)


class V201DeviceModel(V201Answers):
    """Block B (provisioning) and N (monitoring): variables, reports, monitors."""

    def __init__(self, charger: DemoCharger201) -> None:
        super().__init__(charger)
        self.variables = device_model_201(charger.options)
        self.monitors: dict = {}  # id -> SetMonitoringData as set (with its id)

    def lookup(self, entry: dict) -> tuple:
        """(attributeStatus, the variable's row or None) of a component/variable request."""
        component = str((entry.get("component") or {}).get("name"))
        variable = str((entry.get("variable") or {}).get("name"))
        if not any(known == component for known, _ in self.variables):
            return "UnknownComponent", None
        row = self.variables.get((component, variable))
        if row is None:
            return "UnknownVariable", None
        if entry.get("attributeType", "Actual") != "Actual":
            return "NotSupportedAttributeType", None
        return "Accepted", row

    def authorize_remote_start(self) -> bool:
        """AuthCtrlr.AuthorizeRemoteStart: Authorize the idToken of RequestStartTransaction."""
        return self.variables[("AuthCtrlr", "AuthorizeRemoteStart")][0] == "true"

    def on_GetVariables(self, payload: dict) -> dict:
        results = []
        for entry in payload.get("getVariableData") or []:
            status, row = self.lookup(entry)
            result = {"attributeStatus": status, "component": entry.get("component"),
                      "variable": entry.get("variable")}
            if row is not None:
                result["attributeValue"] = row[0]
            results.append(result)
        return {"getVariableResult": results}

    def on_SetVariables(self, payload: dict) -> dict:
        results = []
        for entry in payload.get("setVariableData") or []:
            status, row = self.lookup(entry)
            value = str(entry.get("attributeValue"))
            result = {"attributeStatus": status, "component": entry.get("component"),
                      "variable": entry.get("variable")}
            if row is not None and not self.fits(row, value):
                result.update(attributeStatus="Rejected", attributeStatusInfo={
                    "reasonCode": "ReadOnly" if row[1] == "ReadOnly" else "InvalidValue"})
            elif row is not None:
                row[0] = value
            results.append(result)
        return {"setVariableResult": results}

    @staticmethod
    def fits(row: list, value: str) -> bool:
        """Whether ``value`` may be set on a variable (writable, of its data type)."""
        if row[1] == "ReadOnly":
            return False
        if row[2] == "integer":
            return value.lstrip("-").isdigit()
        return value in ("true", "false") if row[2] == "boolean" else True

    def report_data(self, wanted: Optional[list] = None) -> list:
        """ReportDataType entries, of the component/variable pairs ``wanted`` (all: None)."""
        entries = []
        for (component, variable), (value, mutability, data_type) in self.variables.items():
            if wanted is None or any(self.matches(asked, component, variable)
                                     for asked in wanted):
                entries.append({"component": {"name": component, **EVSE_OF.get(component, {})},
                                "variable": {"name": variable},
                                "variableAttribute": [{"type": "Actual", "value": value,
                                                       "mutability": mutability}],
                                "variableCharacteristics": {"dataType": data_type,
                                                            "supportsMonitoring": True}})
        return entries

    @staticmethod
    def matches(asked: Any, component: str, variable: str) -> bool:
        if not isinstance(asked, dict):
            return False
        asked_variable = (asked.get("variable") or {}).get("name")
        return ((asked.get("component") or {}).get("name") == component
                and asked_variable in (None, variable))

    def on_GetBaseReport(self, payload: dict) -> dict:
        self.charger.spawn(self.in_parts("NotifyReport", payload.get("requestId"), "reportData",
                                         self.report_data()))
        return {"status": "Accepted"}

    def on_GetReport(self, payload: dict) -> dict:
        wanted = payload.get("componentVariable")
        entries = self.report_data(wanted if isinstance(wanted, list) else None)
        if not entries:
            return {"status": "EmptyResultSet"}
        self.charger.spawn(self.in_parts("NotifyReport", payload.get("requestId"), "reportData",
                                         entries))
        return {"status": "Accepted"}

    def on_SetNetworkProfile(self, payload: dict) -> dict:
        say(f"network profile for slot {payload.get('configurationSlot')} kept (not used)")
        return {"status": "Accepted"}

    def on_SetVariableMonitoring(self, payload: dict) -> dict:
        results = []
        for entry in payload.get("setMonitoringData") or []:
            status, _ = self.lookup({"component": entry.get("component"),
                                     "variable": entry.get("variable")})
            result = {"status": status, "type": entry.get("type"),
                      "severity": entry.get("severity"), "component": entry.get("component"),
                      "variable": entry.get("variable")}
            if status == "Accepted":
                monitor_id = entry.get("id") or max(self.monitors, default=0) + 1
                self.monitors[monitor_id] = dict(entry, id=monitor_id)
                result["id"] = monitor_id
            results.append(result)
        return {"setMonitoringResult": results}

    def on_ClearVariableMonitoring(self, payload: dict) -> dict:
        return {"clearMonitoringResult": [
            {"status": "Accepted" if self.monitors.pop(monitor_id, None) else "NotFound",
             "id": monitor_id} for monitor_id in payload.get("id") or []]}

    def on_GetMonitoringReport(self, payload: dict) -> dict:
        if not self.monitors:
            return {"status": "EmptyResultSet"}
        monitors = [{"component": entry["component"], "variable": entry["variable"],
                     "variableMonitoring": [{"id": entry["id"],
                                             "transaction": bool(entry.get("transaction")),
                                             "value": entry["value"], "type": entry["type"],
                                             "severity": entry["severity"]}]}
                    for entry in self.monitors.values()]
        self.charger.spawn(self.in_parts("NotifyMonitoringReport", payload.get("requestId"),
                                         "monitor", monitors))
        return {"status": "Accepted"}

    def on_SetMonitoringBase(self, payload: dict) -> dict:
        return {"status": "Accepted"}

    def on_SetMonitoringLevel(self, payload: dict) -> dict:
        return {"status": "Accepted"}


class V201Control(V201Answers):
    """Blocks C to H: transactions, reset, availability, reservations, the local list, triggers."""

    def on_RequestStartTransaction(self, payload: dict) -> dict:
        station = self.station
        if station.transaction_id is not None:  # it runs already: its id, as the schema says
            say(f"RequestStartTransaction: transaction {station.transaction_id} runs already")
            return {"status": "Accepted", "transactionId": station.transaction_id}
        if station.starting or self.charger.connector_status == "Unavailable":
            say(f"RequestStartTransaction refused: connector {self.charger.connector} is "
                + ("preparing" if station.starting else "unavailable"))
            return {"status": "Rejected"}
        id_token = payload.get("idToken")
        if not isinstance(id_token, dict):
            id_token = {"idToken": self.charger.options.id_tag, "type": "ISO14443"}
        station.starting = True  # at once: a second start arriving now is refused
        self.charger.spawn(self.charger.start_transaction(id_token, payload.get("remoteStartId")))
        return {"status": "Accepted"}

    def on_RequestStopTransaction(self, payload: dict) -> dict:
        running = self.station.transaction_id
        if running is None or payload.get("transactionId") != running:
            return {"status": "Rejected"}
        self.charger.spawn(self.charger.stop_transaction("Remote"))
        return {"status": "Accepted"}

    def on_GetTransactionStatus(self, payload: dict) -> dict:
        asked = payload.get("transactionId")
        queued = [kept for action, kept in self.station.queued if action == "TransactionEvent"
                  and asked in (None, kept["transactionInfo"]["transactionId"])]
        reply = {"messagesInQueue": bool(queued)}
        if asked is not None:
            reply["ongoingIndicator"] = asked == self.station.transaction_id
        return reply

    def on_Reset(self, payload: dict) -> dict:
        if payload.get("type") == "OnIdle" and self.station.transaction_id is not None:
            self.charger.reset_when_idle = True  # after the transaction ends
            return {"status": "Scheduled"}
        self.charger.spawn(self.charger.reboot("ImmediateReset", "immediate reset"))
        return {"status": "Accepted"}

    def on_ChangeAvailability(self, payload: dict) -> dict:
        if self.station.transaction_id is not None or self.station.starting:
            return {"status": "Scheduled"}  # after the transaction (the demo forgets it)
        operative = payload.get("operationalStatus") != "Inoperative"
        self.charger.spawn(self.charger.status("Available" if operative else "Unavailable"))
        return {"status": "Accepted"}

    def on_UnlockConnector(self, payload: dict) -> dict:
        if (payload.get("evseId"), payload.get("connectorId")) != (EVSE_ID,
                                                                   self.charger.connector):
            return {"status": "UnknownConnector"}
        if self.station.transaction_id is not None:
            return {"status": "OngoingAuthorizedTransaction"}
        return {"status": "Unlocked"}

    def on_CostUpdated(self, payload: dict) -> dict:
        say(f"cost of transaction {payload.get('transactionId')}: {payload.get('totalCost')}")
        return {}

    def on_ClearCache(self, payload: dict) -> dict:
        return {"status": "Accepted"}

    def on_SendLocalList(self, payload: dict) -> dict:
        if isinstance(payload.get("versionNumber"), int):
            self.charger.local_list_version = payload["versionNumber"]
        return {"status": "Accepted"}

    def on_GetLocalListVersion(self, payload: dict) -> dict:
        return {"versionNumber": self.charger.local_list_version}

    def on_DataTransfer(self, payload: dict) -> dict:
        return {"status": "Accepted"}

    def on_TriggerMessage(self, payload: dict) -> dict:
        requested = payload.get("requestedMessage")
        if requested == "TransactionEvent" and self.station.transaction_id is None:
            return {"status": "Rejected"}
        message = self.triggered(str(requested))
        if message is None:
            return {"status": "NotImplemented"}
        self.charger.spawn(message)
        return {"status": "Accepted"}

    def triggered(self, requested: str) -> Any:
        """The message TriggerMessage asks for, to send (None: the demo has none such)."""
        charger, station = self.charger, self.station
        if requested == "BootNotification":
            return charger.call(requested, charger.boot_payload("Triggered"))
        if requested == "Heartbeat":
            return charger.call(requested, {})
        if requested == "StatusNotification":
            return charger.status(charger.current_status(), again=True)
        if requested == "MeterValues":
            return charger.call(requested, {"evseId": EVSE_ID, "meterValue": [
                meter_value_201(station, "Trigger")]})
        if requested == "TransactionEvent":
            return charger.transaction_message(requested, transaction_event(
                station, charger.options, "Updated", "Trigger", "Trigger"))
        if requested in ("LogStatusNotification", "FirmwareStatusNotification",
                         "PublishFirmwareStatusNotification"):
            return charger.call(requested, {"status": "Idle"})
        certificate_types = {"SignChargingStationCertificate": "ChargingStationCertificate",
                             "SignV2GCertificate": "V2GCertificate"}
        if requested in certificate_types:
            return charger.request_signing({"certificateType": certificate_types[requested]})
        return None


class V201Services(V201Answers):
    """Blocks K, L, M, N (logs), O: charging profiles, firmware, certificates, logs, customer
    information, display messages."""

    def __init__(self, charger: DemoCharger201) -> None:
        super().__init__(charger)
        self.profiles: dict = {}  # chargingProfile id -> (evseId, chargingProfile)
        self.messages: dict = {}  # display message id -> MessageInfoType

    def on_SetChargingProfile(self, payload: dict) -> dict:
        profile = payload.get("chargingProfile") or {}
        self.profiles[profile.get("id")] = (payload.get("evseId"), profile)
        return {"status": "Accepted"}

    def on_GetChargingProfiles(self, payload: dict) -> dict:
        asked = (payload.get("chargingProfile") or {}).get("chargingProfileId")
        found = [(evse, profile) for profile_id, (evse, profile) in self.profiles.items()
                 if not asked or profile_id in asked]
        if not found:
            return {"status": "NoProfiles"}
        for number, (evse, profile) in enumerate(found):
            self.follow_up("ReportChargingProfiles", {
                "requestId": payload.get("requestId"), "chargingLimitSource": "CSO",
                "evseId": evse, "chargingProfile": [profile], "tbc": number < len(found) - 1})
        return {"status": "Accepted"}

    def on_ClearChargingProfile(self, payload: dict) -> dict:
        asked = payload.get("chargingProfileId")
        cleared = [profile_id for profile_id in list(self.profiles)
                   if asked is None or profile_id == asked]
        for profile_id in cleared:
            del self.profiles[profile_id]
        return {"status": "Accepted" if cleared else "Unknown"}

    def on_UpdateFirmware(self, payload: dict) -> dict:
        location = str((payload.get("firmware") or {}).get("location", ""))
        self.charger.spawn(self.charger.download_signed_firmware(
            location, payload.get("requestId"), "FirmwareStatusNotification"))
        return {"status": "Accepted"}

    def on_PublishFirmware(self, payload: dict) -> dict:
        return {"status": "Rejected"}  # the demo is no local controller: nothing to publish from

    def on_UnpublishFirmware(self, payload: dict) -> dict:
        return {"status": "NoFirmware"}

    def on_GetLog(self, payload: dict) -> dict:
        location = str((payload.get("log") or {}).get("remoteLocation", ""))
        name, text = self.charger.log_file(payload.get("logType"))
        self.charger.spawn(self.charger.upload_log(location, payload.get("requestId"), name, text))
        return {"status": "Accepted", "filename": name}

    def on_CustomerInformation(self, payload: dict) -> dict:
        if payload.get("report"):
            token = (payload.get("idToken") or {}).get("idToken") or "(no idToken)"
            self.charger.spawn(self.in_parts(
                "NotifyCustomerInformation", payload.get("requestId"), "data",
                f"idToken {token}: the demo charger keeps no customer data"))
        return {"status": "Accepted"}

    def on_CertificateSigned(self, payload: dict) -> dict:
        return self.charger.on_CertificateSigned(payload)

    def on_InstallCertificate(self, payload: dict) -> dict:
        return self.charger.on_InstallCertificate(payload)

    def on_DeleteCertificate(self, payload: dict) -> dict:
        return self.charger.on_DeleteCertificate(payload)

    def on_GetInstalledCertificateIds(self, payload: dict) -> dict:
        asked = payload.get("certificateType") or CERTIFICATE_USES_201
        chain = [{"certificateType": kind, "certificateHashData": self.charger.hash_of(pem)}
                 for kind in asked for pem in self.charger.certificates.get(kind, [])]
        if not chain:
            return {"status": "NotFound"}
        return {"status": "Accepted", "certificateHashDataChain": chain}

    def on_SetDisplayMessage(self, payload: dict) -> dict:
        message = payload.get("message") or {}
        self.messages[message.get("id")] = message
        return {"status": "Accepted"}

    def on_GetDisplayMessages(self, payload: dict) -> dict:
        asked = payload.get("id")
        found = [message for message_id, message in self.messages.items()
                 if not asked or message_id in asked]
        if not found:
            return {"status": "Unknown"}
        self.charger.spawn(self.in_parts("NotifyDisplayMessages", payload.get("requestId"),
                                         "messageInfo", found, numbered=False))
        return {"status": "Accepted"}

    def on_ClearDisplayMessage(self, payload: dict) -> dict:
        found = self.messages.pop(payload.get("id"), None)
        return {"status": "Accepted" if found is not None else "Unknown"}


# Smart charging, reservations (blocks H and K): the station's own limit, what a profile in A or W
# means in the other unit (230 V a phase), and what --smart-charging reports.
STATION_MAX_AMPS = 16.0
VOLTS_A_PHASE = 230
EMS_LIMIT_W = 11000.0  # the limit NotifyChargingLimit reports from the "EMS" (--smart-charging)


def in_unit(limit: float, phases: int, unit: str, wanted: str) -> float:
    """A limit in ``unit`` (A or W) as ``wanted`` says, at ``phases`` phases of 230 V."""
    if unit == wanted:
        return limit
    factor = VOLTS_A_PHASE * phases
    return round(limit * factor if wanted == "W" else limit / factor, 1)


def composite_schedule(profiles: dict, payload: dict) -> dict:
    """GetCompositeSchedule's schedule: the profile of the highest stackLevel on the EVSE (or on
    the whole station, EVSE 0), its periods within the duration; without one, the station's own
    16 A."""
    evse, duration = payload.get("evseId", EVSE_ID), payload.get("duration", 0)
    found = [profile for profile_evse, profile in profiles.values() if profile_evse in (evse, 0)]
    periods, unit = [{"startPeriod": 0, "limit": STATION_MAX_AMPS}], "A"
    if found:
        top = max(found, key=lambda profile: profile.get("stackLevel", 0))
        schedule = (top.get("chargingSchedule") or [{}])[0]
        unit = schedule.get("chargingRateUnit", "A")
        periods = [dict(period) for period in schedule.get("chargingSchedulePeriod") or []
                   if period.get("startPeriod", 0) < max(duration, 1)] or periods
    wanted = payload.get("chargingRateUnit", unit)
    for period in periods:
        period["limit"] = in_unit(float(period["limit"]), period.get("numberPhases", 3), unit,
                                  wanted)
    return {"evseId": evse, "duration": duration, "scheduleStart": now_iso(),
            "chargingRateUnit": wanted, "chargingSchedulePeriod": periods}


class V201SmartCharging(V201Answers):
    """Block H (reservations) and what block K reports on its own: a reservation that expires or
    is cancelled says so with ReservationStatusUpdate; GetCompositeSchedule answers from the
    profiles SetChargingProfile kept; with --smart-charging a transaction's start brings
    NotifyEVChargingNeeds and NotifyChargingLimit."""

    def __init__(self, charger: DemoCharger201) -> None:
        super().__init__(charger)
        self.reservation: Optional[int] = None  # the id of the reservation it holds

    def on_ReserveNow(self, payload: dict) -> dict:
        if self.station.transaction_id is not None or self.station.starting:
            return {"status": "Occupied"}
        self.reservation = payload.get("id")
        self.charger.spawn(self.charger.status("Reserved"))
        self.charger.spawn(self.expire(payload.get("id"), payload.get("expiryDateTime")))
        return {"status": "Accepted"}

    def on_CancelReservation(self, payload: dict) -> dict:
        if self.reservation is None or payload.get("reservationId") != self.reservation:
            return {"status": "Rejected"}
        self.spawn_reservation_ends("Removed")
        return {"status": "Accepted"}

    def spawn_reservation_ends(self, why: str) -> None:
        """The reservation ends (Expired, Removed): ReservationStatusUpdate, then Available."""
        reservation, self.reservation = self.reservation, None
        self.charger.spawn(self.reservation_ends(reservation, why))

    async def reservation_ends(self, reservation: int, why: str) -> None:
        await self.charger.call("ReservationStatusUpdate", {
            "reservationId": reservation, "reservationUpdateStatus": why})
        if self.station.transaction_id is None and not self.station.starting:
            await self.charger.status("Available")

    async def expire(self, reservation: Any, expiry: Any) -> None:
        """At its expiryDateTime, a reservation not yet used or cancelled expires."""
        try:
            until = datetime.datetime.fromisoformat(str(expiry).replace("Z", "+00:00"))
            seconds = (until - datetime.datetime.now(datetime.timezone.utc)).total_seconds()
        except ValueError:
            seconds = 0
        await self.charger.pause(max(0.0, seconds))
        if self.reservation == reservation and self.station.transaction_id is None \
                and not self.station.starting:
            say(f"reservation {reservation} expired")
            self.spawn_reservation_ends("Expired")

    def on_GetCompositeSchedule(self, payload: dict) -> dict:
        profiles = getattr(self, "profiles", {})
        return {"status": "Accepted", "schedule": composite_schedule(profiles, payload)}

    def transaction_started(self) -> None:
        """--smart-charging: the EV says what it needs, and an EMS limits the EVSE."""
        self.reservation = None  # a reservation ends when its EVSE is used
        if not self.charger.options.smart_charging:
            return
        self.follow_up("NotifyEVChargingNeeds", {"evseId": EVSE_ID, "chargingNeeds": {
            "requestedEnergyTransfer": "AC_three_phase", "departureTime": now_iso(),
            "acChargingParameters": {"energyAmount": 20000, "evMinCurrent": 6,
                                     "evMaxCurrent": 32, "evMaxVoltage": 400}}})
        self.follow_up("NotifyChargingLimit", {"evseId": EVSE_ID, "chargingLimit": {
            "chargingLimitSource": "EMS", "isGridCritical": False}, "chargingSchedule": [{
                "id": 1, "chargingRateUnit": "W",
                "chargingSchedulePeriod": [{"startPeriod": 0, "limit": EMS_LIMIT_W}]}]})


class V201Security(V201DeviceModel):
    """Block A (security): SetNetworkProfile kept for a security profile raise; SetVariables of
    SecurityCtrlr.BasicAuthPassword and SecurityCtrlr.SecurityProfile applied by connecting again
    (with the new password; at the network profile of the new security profile, never lower)."""

    def on_SetNetworkProfile(self, payload: dict) -> dict:
        data = payload.get("connectionData") or {}
        self.station.network_profiles[payload.get("configurationSlot")] = data
        say(f"network profile for slot {payload.get('configurationSlot')} kept: "
            f"{data.get('ocppCsmsUrl')} at security profile {data.get('securityProfile')}")
        return {"status": "Accepted"}

    def on_SetVariables(self, payload: dict) -> dict:
        reply = super().on_SetVariables(payload)
        changes = []
        for entry, result in zip(payload.get("setVariableData") or [], reply["setVariableResult"]):
            key = (str((entry.get("component") or {}).get("name")),
                   str((entry.get("variable") or {}).get("name")))
            if key[0] == "SecurityCtrlr" and key[1] in ("BasicAuthPassword", "SecurityProfile"):
                change = getattr(self, "new_" + key[1])(str(entry.get("attributeValue")))
                result["attributeStatus"] = "Accepted" if change else "Rejected"
                changes += [change] if change else []
        if changes:
            self.charger.spawn(self.connect_again(changes))
        return reply

    def new_BasicAuthPassword(self, value: str) -> Optional[tuple]:
        if not 0 < len(value) <= 40:  # passwordString, at most 40 characters
            return None
        return ("password", value)

    def new_SecurityProfile(self, value: str) -> Optional[tuple]:
        """The new profile's network profile (its URL), if it is higher and one is kept."""
        options = self.charger.options
        wanted = int(value) if value.isdigit() else 0
        if wanted <= security_profile(options):
            say(f"SecurityProfile {value} refused: not higher than {security_profile(options)}")
            return None
        if wanted == 3 and not options.client_cert:
            say("SecurityProfile 3 refused: no --client-cert")
            return None
        for data in self.station.network_profiles.values():
            if data.get("securityProfile") == wanted and str(data.get("ocppCsmsUrl", "")) \
                    .startswith("wss://"):
                return ("profile", wanted, str(data["ocppCsmsUrl"]))
        say(f"SecurityProfile {wanted} refused: no network profile of it (SetNetworkProfile)")
        return None

    async def connect_again(self, changes: list) -> None:
        """Take the new password and profile, tell the CSMS, and connect again with them."""
        await asyncio.sleep(0.1)  # the SetVariablesResponse goes out first
        options = self.charger.options
        for change in changes:
            if change[0] == "password":
                options.password = change[1]
            else:
                options.security_profile = change[1]
                options.url = change[2].rstrip("/") + "/" + station_identity(options)
        await self.charger.call("SecurityEventNotification", {
            "type": "ReconfigurationOfSecurityParameters", "timestamp": now_iso(),
            "techInfo": ", ".join("SecurityProfile %d" % change[1] if change[0] == "profile"
                                  else "BasicAuthPassword" for change in changes)})
        say("connecting again with the new security settings")
        self.station.rebooting = True
        await self.charger.ws.close(1000, "new security settings")


class V201Requests(V201SmartCharging, V201Security, V201Control, V201Services):
    """Every CSMS-initiated message of OCPP 2.0.1, answered: one on_<Action> each."""


CHARGERS = {"1.6": DemoCharger, "2.0.1": DemoCharger201}
SUBPROTOCOLS = {"1.6": "ocpp1.6", "2.0.1": "ocpp2.0.1"}


class ServerGone(Exception):
    """The connection to the server ended while the charger waited for something."""


def refusal_status(exc: Exception) -> Optional[int]:
    """The HTTP status of a refused websocket upgrade, on old and new websockets alike."""
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None) or getattr(exc, "status_code", None)


def station_identity(options: argparse.Namespace) -> str:
    """The charge point id: the URL's last path segment."""
    return options.url.rstrip("/").rsplit("/", 1)[-1]


def connect_arguments(options: argparse.Namespace) -> dict:
    """websockets.connect's arguments: the subprotocol; for wss://, TLS trusting --ca-file (profile
    2) with --client-cert (profile 3); with --password, HTTP Basic (username: the station's id)."""
    arguments: dict = {"subprotocols": [SUBPROTOCOLS[options.ocpp]]}
    if options.url.startswith("wss:"):
        context = ssl.create_default_context(cafile=options.ca_file)
        if options.client_cert:
            context.load_cert_chain(options.client_cert, options.client_key)
        arguments["ssl"] = context
    if options.password is not None:
        credentials = f"{station_identity(options)}:{options.password}".encode()
        header = "Basic " + base64.b64encode(credentials).decode("ascii")
        # websockets.connect is the asyncio client from websockets 14 on, the legacy one before.
        name = ("additional_headers" if websockets.connect.__module__.startswith(
            "websockets.asyncio") else "extra_headers")
        arguments[name] = [("Authorization", header)]
    return arguments


async def connect(options: argparse.Namespace) -> Any:
    """A websocket to the server, retrying for --connect-timeout seconds.

    An int instead is the exit status: 2 for a URL that cannot work, 1 when
    the server refuses the charger (401, 403, 404: retrying would not help)
    or never answers.
    """
    deadline = time.monotonic() + options.connect_timeout
    while True:
        try:
            return await websockets.connect(options.url, **connect_arguments(options))
        except websockets.InvalidURI as exc:
            say(f"cannot use the URL {options.url}: {exc} (expected "
                f"ws://host:port/<charge point id>)")
            return 2
        except (OSError, ssl.SSLError, websockets.InvalidHandshake, asyncio.TimeoutError) as exc:
            status = refusal_status(exc)
            if status in (400, 401, 403, 404):
                say(f"the server refused {options.url} with HTTP {status}; not retrying")
                return 1
            if time.monotonic() > deadline:
                say(f"cannot connect to {options.url}: {exc}")
                return 1
            await asyncio.sleep(0.5)


async def main(options: argparse.Namespace) -> int:
    station = Station()
    station.soc = options.soc
    while True:
        websocket = await connect(options)
        if isinstance(websocket, int):
            return websocket
        say("connected to %s (%s dialect)"
            % (options.url, "flexicharge" if options.flexicharge else SUBPROTOCOLS[options.ocpp]))
        if websocket.subprotocol != SUBPROTOCOLS[options.ocpp]:
            say("the server did not choose %s (it chose %s)"
                % (SUBPROTOCOLS[options.ocpp], websocket.subprotocol or "none"))
        charger = station.charger = CHARGERS[options.ocpp](websocket, options, station)
        try:
            if await charger.run():
                return 0  # --once: the transaction has stopped
            say("the server closed the connection")
        except websockets.ConnectionClosed as exc:
            say(f"connection closed: {exc}")
        finally:
            station.charger = None
            await websocket.close()
        if station.rebooting:
            station.rebooting = False
        elif not options.reconnect:
            return 1 if options.once else 0
        await asyncio.sleep(0.5)  # then connect and boot again, as a charger does


def security_profile(options: argparse.Namespace) -> int:
    """The security profile it connects at: the one a SetVariables raised it to, else 1 for ws://,
    2 for wss://, 3 for wss:// with --client-cert."""
    if options.security_profile:
        return options.security_profile
    return (3 if options.client_cert else 2) if options.url.startswith("wss:") else 1


def add_security_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The security profiles' flags, on ``parser`` (which it returns)."""
    parser.set_defaults(security_profile=0)  # 0: as the URL and --client-cert say
    security = parser.add_argument_group("security profiles (wss:// URLs: TLS)")
    security.add_argument("--password",
                          help="HTTP Basic password (profiles 1 and 2; username: the charge point "
                               "id)")
    security.add_argument("--ca-file", metavar="PEM",
                          help="trust this CA for the server's certificate (profiles 2 and 3)")
    security.add_argument("--client-cert", metavar="PEM",
                          help="present this client certificate (profile 3; with --client-key)")
    security.add_argument("--client-key", metavar="PEM",
                          help="the client certificate's key, if not in --client-cert")
    return parser


def add_charger_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The URL, the version and dialect, and what the charger does, on ``parser`` (which it
    returns)."""
    parser.add_argument("url", nargs="?", default="ws://127.0.0.1:60003/CP-1",
                        help="the mock server's URL "
                        "with the charge point id as its last path segment (default %(default)s)")
    parser.add_argument("--ocpp", choices=sorted(SUBPROTOCOLS), default="1.6",
                        help="the OCPP version it speaks (default %(default)s)")
    parser.add_argument("--flexicharge", action="store_true",
                        help="speak the FlexiCharge charger's dialect")
    parser.add_argument("--connector", type=int, default=1,
                        help="connector id (default %(default)s)")
    parser.add_argument("--id-tag", default="1",
                        help="idTag of its StopTransaction (default %(default)s)")
    parser.add_argument("--heartbeat-interval", type=float,
                        help="seconds between heartbeats (default: the interval of "
                             "BootNotification.conf)")
    parser.add_argument("--meter-interval", type=float, default=1.0,
                        help="seconds between MeterValues while charging (default %(default)s)")
    parser.add_argument("--no-wait-boot-data", dest="wait_boot_data", action="store_false",
                        help="do not wait for the FlexiCharge BootData after booting")
    parser.add_argument("--once", action="store_true",
                        help="exit after the first transaction has stopped")
    return parser


def add_behaviour_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """How it behaves beyond the rules and the connection, on ``parser`` (which it returns)."""
    parser.add_argument("--misbehave", action="append", default=[], choices=MISBEHAVIOURS,
                        help="break a rule on purpose, to see the server's behaviour checks catch "
                             "it; repeatable")
    parser.add_argument("--reconnect", action="store_true",
                        help="when the server closes the connection, connect and boot again")
    parser.add_argument("--soc", type=int, default=20, choices=range(0, 101), metavar="PERCENT",
                        help="state of charge to start at (default %(default)s); at 100 it stops "
                             "drawing power")
    parser.add_argument("--connect-timeout", type=float, default=30.0,
                        help="keep trying to connect this long, seconds (default %(default)s)")
    parser.add_argument("--smart-charging", action="store_true",
                        help="OCPP 2.0.1: at a transaction's start, send NotifyEVChargingNeeds "
                             "(the EV's) and NotifyChargingLimit (an EMS limit of 11 kW)")
    return parser


def parse_args(argv: Optional[list] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    options = add_security_arguments(add_behaviour_arguments(add_charger_arguments(
        parser))).parse_args(argv)
    if options.ocpp != "1.6" and options.flexicharge:
        parser.error("--flexicharge is a dialect of OCPP 1.6: it cannot go with --ocpp "
                     + options.ocpp)
    if options.ocpp == "1.6" and options.smart_charging:
        parser.error("--smart-charging sends OCPP 2.0.1 messages: it needs --ocpp 2.0.1")
    for name in options.misbehave:
        if MISBEHAVIOUR_VERSIONS.get(name, options.ocpp) != options.ocpp:
            parser.error("--misbehave %s breaks a rule of OCPP %s only: it cannot go with --ocpp %s"
                         % (name, MISBEHAVIOUR_VERSIONS[name], options.ocpp))
    return options


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main(parse_args())))
    except KeyboardInterrupt:
        sys.exit(0)
