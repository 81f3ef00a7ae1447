"""Config flow for Ambient Weather."""

from collections.abc import Mapping
from typing import Any, override

import probatio

from homeassistant.config_entries import (
    SOURCE_REAUTH,
    SOURCE_RECONFIGURE,
    ConfigEntry,
    ConfigFlow,
    ConfigFlowResult,
    OptionsFlow,
)
from homeassistant.const import CONF_API_KEY
from homeassistant.core import callback
from homeassistant.helpers.selector import (
    BooleanSelector,
    TextSelector,
    TextSelectorConfig,
    TextSelectorType,
)

from .api import AmbientAuthError, AmbientError
from .const import CONF_APPLICATION_KEY, CONF_GAP_FILL, DOMAIN, LOGGER
from .coordinator import create_client, station_from_device
from .queues import async_acquire_queue, async_release_queue, key_label
from .request_queue import Priority, QueueStoppedError

_PASSWORD = TextSelector(TextSelectorConfig(type=TextSelectorType.PASSWORD))
KEYS_SCHEMA = probatio.Schema(
    {
        probatio.Required(CONF_API_KEY): _PASSWORD,
        probatio.Required(CONF_APPLICATION_KEY): _PASSWORD,
    }
)

OPTIONS_SCHEMA = probatio.Schema(
    {probatio.Optional(CONF_GAP_FILL, default=True): BooleanSelector()}
)


class AmbientWeatherFlowHandler(ConfigFlow, domain=DOMAIN):
    """Ask for the account's API key and the application key."""

    VERSION = 1

    @staticmethod
    @callback
    @override
    def async_get_options_flow(config_entry: ConfigEntry) -> OptionsFlow:
        """Return the options flow."""
        return AmbientWeatherOptionsFlow()

    @override
    async def async_step_user(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Handle keys entered by the user."""
        errors: dict[str, str] = {}
        if user_input is not None:
            # Keys copied from the Ambient website often carry stray spaces.
            user_input = {key: value.strip() for key, value in user_input.items()}
            errors, stations = await self._async_validate(user_input)
            if not errors and not stations:
                return self.async_abort(reason="no_devices")
            if not errors:
                await self.async_set_unique_id(key_label(user_input[CONF_API_KEY]))
                if self.source in (SOURCE_REAUTH, SOURCE_RECONFIGURE):
                    self._abort_if_unique_id_mismatch(reason="wrong_account")
                    entry = (
                        self._get_reauth_entry()
                        if self.source == SOURCE_REAUTH
                        else self._get_reconfigure_entry()
                    )
                    return self.async_update_reload_and_abort(
                        entry, data_updates=user_input
                    )
                self._abort_if_unique_id_configured()
                title = stations[0] if len(stations) == 1 else "Ambient Weather"
                return self.async_create_entry(title=title, data=user_input)

        return self.async_show_form(
            step_id="user",
            data_schema=self.add_suggested_values_to_schema(KEYS_SCHEMA, user_input),
            errors=errors,
        )

    async def async_step_reauth(
        self, entry_data: Mapping[str, Any]
    ) -> ConfigFlowResult:
        """Ask for new keys after the API refused the stored ones."""
        return await self.async_step_user()

    async def async_step_reconfigure(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Let the user replace the keys of an entry."""
        return await self.async_step_user(user_input)

    async def _async_validate(
        self, user_input: dict[str, Any]
    ) -> tuple[dict[str, str], list[str]]:
        """Try the keys with one request; return form errors and station names."""
        api_key = user_input[CONF_API_KEY]
        application_key = user_input[CONF_APPLICATION_KEY]
        client = create_client(self.hass, api_key, application_key)
        queue = async_acquire_queue(self.hass, api_key, application_key)
        try:
            devices = await queue.submit(client.devices, priority=Priority.CONFIG_FLOW)
        except AmbientAuthError:
            return {"base": "invalid_auth"}, []
        except AmbientError, QueueStoppedError:
            return {"base": "cannot_connect"}, []
        except Exception:  # noqa: BLE001
            LOGGER.exception("Unexpected exception")
            return {"base": "unknown"}, []
        finally:
            await async_release_queue(self.hass, queue)
        return {}, [station_from_device(device).name for device in devices]


class AmbientWeatherOptionsFlow(OptionsFlow):
    """Let the user turn the automatic gap fill off and on."""

    async def async_step_init(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Show and store the options."""
        if user_input is not None:
            return self.async_create_entry(data=user_input)
        return self.async_show_form(
            step_id="init",
            data_schema=self.add_suggested_values_to_schema(
                OPTIONS_SCHEMA, self.config_entry.options
            ),
        )
