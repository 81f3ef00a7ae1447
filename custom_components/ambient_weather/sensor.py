"""Sensors for the measurements of Ambient Weather stations."""

from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import TYPE_CHECKING, Any, override

from homeassistant.components.sensor import (
    RestoreSensor,
    SensorDeviceClass,
    SensorEntity,
    SensorEntityDescription,
    SensorStateClass,
)
from homeassistant.const import (
    DEGREE,
    PERCENTAGE,
    UV_INDEX,
    EntityCategory,
    UnitOfIrradiance,
    UnitOfLength,
    UnitOfPrecipitationDepth,
    UnitOfPressure,
    UnitOfSpeed,
    UnitOfTemperature,
    UnitOfVolumetricFlux,
)
from homeassistant.core import HomeAssistant
from homeassistant.helpers.dispatcher import async_dispatcher_connect
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback
from homeassistant.util import dt as dt_util

from .api import to_number
from .const import progress_signal
from .coordinator import AmbientConfigEntry
from .entity import AmbientEntity

if TYPE_CHECKING:
    from .backfill import BackfillManager
    from .backfill_worker import BackfillState

# The coordinator fetches for every entity at once.
PARALLEL_UPDATES = 0


@dataclass(frozen=True, kw_only=True)
class AmbientSensorEntityDescription(SensorEntityDescription):
    """Describes an Ambient Weather sensor; `key` is the API field."""


def _field(
    key: str,
    translation_key: str,
    *,
    device_class: SensorDeviceClass,
    unit: str,
    state_class: SensorStateClass = SensorStateClass.MEASUREMENT,
    precision: int | None = None,
) -> AmbientSensorEntityDescription:
    """Describe a field of the API, which always reports in US units."""
    return AmbientSensorEntityDescription(
        key=key,
        translation_key=translation_key,
        device_class=device_class,
        native_unit_of_measurement=unit,
        state_class=state_class,
        suggested_display_precision=precision,
    )


_temperature = partial(
    _field,
    device_class=SensorDeviceClass.TEMPERATURE,
    unit=UnitOfTemperature.FAHRENHEIT,
    precision=1,
)
_humidity = partial(_field, device_class=SensorDeviceClass.HUMIDITY, unit=PERCENTAGE)
_pressure = partial(
    _field,
    device_class=SensorDeviceClass.ATMOSPHERIC_PRESSURE,
    unit=UnitOfPressure.INHG,
    precision=2,
)
_wind = partial(
    _field,
    device_class=SensorDeviceClass.WIND_SPEED,
    unit=UnitOfSpeed.MILES_PER_HOUR,
    precision=1,
)
# Rain accumulators, which the console resets on its own clock.
_rain_total = partial(
    _field,
    device_class=SensorDeviceClass.PRECIPITATION,
    unit=UnitOfPrecipitationDepth.INCHES,
    state_class=SensorStateClass.TOTAL_INCREASING,
    precision=2,
)


SENSORS: tuple[AmbientSensorEntityDescription, ...] = (
    _temperature("tempf", "temperature_outdoor"),
    _temperature("tempinf", "temperature_indoor"),
    _temperature("feelsLike", "feels_like"),
    _temperature("dewPoint", "dew_point"),
    _temperature("feelsLikein", "feels_like_indoor"),
    _temperature("dewPointin", "dew_point_indoor"),
    _humidity("humidity", "humidity_outdoor"),
    _humidity("humidityin", "humidity_indoor"),
    _pressure("baromrelin", "pressure_relative"),
    _pressure("baromabsin", "pressure_absolute"),
    _wind("windspeedmph", "wind_speed"),
    _wind("windgustmph", "wind_gust"),
    _wind("maxdailygust", "max_daily_gust"),
    _wind("windspdmph_avg10m", "wind_speed_avg_10m"),
    AmbientSensorEntityDescription(
        key="winddir",
        translation_key="wind_direction",
        device_class=SensorDeviceClass.WIND_DIRECTION,
        native_unit_of_measurement=DEGREE,
        state_class=SensorStateClass.MEASUREMENT_ANGLE,
    ),
    AmbientSensorEntityDescription(
        key="hourlyrainin",
        translation_key="rain_rate",
        device_class=SensorDeviceClass.PRECIPITATION_INTENSITY,
        native_unit_of_measurement=UnitOfVolumetricFlux.INCHES_PER_HOUR,
        state_class=SensorStateClass.MEASUREMENT,
        suggested_display_precision=2,
    ),
    _rain_total("eventrainin", "rain_event"),
    _rain_total("dailyrainin", "rain_daily"),
    _rain_total("weeklyrainin", "rain_weekly"),
    _rain_total("monthlyrainin", "rain_monthly"),
    _rain_total("yearlyrainin", "rain_yearly"),
    _rain_total("totalrainin", "rain_total"),
    AmbientSensorEntityDescription(
        # A rolling window: it rises and falls, so it is no counter.
        key="24hourrainin",
        translation_key="rain_24h",
        device_class=SensorDeviceClass.PRECIPITATION,
        native_unit_of_measurement=UnitOfPrecipitationDepth.INCHES,
        state_class=SensorStateClass.MEASUREMENT,
        suggested_display_precision=2,
    ),
    AmbientSensorEntityDescription(
        key="solarradiation",
        translation_key="solar_radiation",
        device_class=SensorDeviceClass.IRRADIANCE,
        native_unit_of_measurement=UnitOfIrradiance.WATTS_PER_SQUARE_METER,
        state_class=SensorStateClass.MEASUREMENT,
    ),
    AmbientSensorEntityDescription(
        key="uv",
        translation_key="uv_index",
        native_unit_of_measurement=UV_INDEX,
        state_class=SensorStateClass.MEASUREMENT,
    ),
    AmbientSensorEntityDescription(
        key="lightning_day",
        translation_key="lightning_strikes_day",
        state_class=SensorStateClass.TOTAL_INCREASING,
    ),
    AmbientSensorEntityDescription(
        key="lightning_distance",
        translation_key="lightning_distance",
        device_class=SensorDeviceClass.DISTANCE,
        native_unit_of_measurement=UnitOfLength.MILES,
        state_class=SensorStateClass.MEASUREMENT,
        entity_category=EntityCategory.DIAGNOSTIC,
    ),
)


BACKFILL_PROGRESS = SensorEntityDescription(
    key="backfill_progress",
    translation_key="backfill_progress",
    native_unit_of_measurement=PERCENTAGE,
    entity_category=EntityCategory.DIAGNOSTIC,
    suggested_display_precision=0,
)
# What the progress sensor shows after a restart, until a job runs again.
RESTORED_ATTRIBUTES = ("pages_done", "pages_total", "hours_imported", "status", "ended")

QUEUE_DEPTH = SensorEntityDescription(
    key="queue_depth",
    translation_key="queue_depth",
    entity_category=EntityCategory.DIAGNOSTIC,
    entity_registry_enabled_default=False,
    state_class=SensorStateClass.MEASUREMENT,
)


async def async_setup_entry(
    hass: HomeAssistant,
    entry: AmbientConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add a sensor for every known field each station reports."""
    coordinator = entry.runtime_data.coordinator
    async_add_entities(
        AmbientSensorEntity(coordinator, station.mac, description)
        for station in coordinator.data.values()
        for description in SENSORS
        if description.key in station.last_data
    )
    async_add_entities(
        entity
        for station in coordinator.data.values()
        for entity in (
            AmbientBackfillSensorEntity(coordinator, station.mac, BACKFILL_PROGRESS),
            AmbientQueueSensorEntity(coordinator, station.mac, QUEUE_DEPTH),
        )
    )


class AmbientSensorEntity(AmbientEntity, SensorEntity):
    """A sensor showing one numeric field of a station."""

    entity_description: AmbientSensorEntityDescription

    @property
    @override
    def native_value(self) -> float | None:
        """Return the field's value, or None when it is not a number."""
        return to_number(self._field())


class AmbientBackfillSensorEntity(AmbientEntity, RestoreSensor):
    """How far the station's backfill is, or how its last one ended."""

    _restored_value: float | None = None
    _restored_attributes: dict[str, Any] | None = None

    @property
    @override
    def available(self) -> bool:
        """Return True: progress does not depend on the station's data."""
        return True

    @property
    @override
    def native_value(self) -> float | None:
        """Return the share of pages done, in percent."""
        if (state := self._manager.states.get(self._mac)) is not None:
            return _percent(state)
        if (outcome := self._manager.outcomes.get(self._mac)) is not None:
            return 100.0 if outcome.status == "completed" else _percent(outcome.state)
        return self._restored_value

    @property
    @override
    def extra_state_attributes(self) -> dict[str, Any] | None:
        """Return the pages, hours and status of the running or the last job."""
        if (state := self._manager.states.get(self._mac)) is not None:
            remaining = timedelta(seconds=self._manager.estimated_seconds(state))
            return _job_attributes(state) | {
                "status": "running",
                "estimated_end": (dt_util.utcnow() + remaining).isoformat(),
            }
        if (outcome := self._manager.outcomes.get(self._mac)) is not None:
            attributes = _job_attributes(outcome.state)
            if outcome.status == "completed":
                # The plan counts a page per day; the history may take fewer.
                attributes["pages_total"] = outcome.state.pages_done
            return attributes | {
                "status": outcome.status,
                "ended": outcome.ended.isoformat(),
            }
        return self._restored_attributes

    @property
    def _manager(self) -> BackfillManager:
        """Return the entry's backfill manager."""
        return self.coordinator.config_entry.runtime_data.backfill

    @override
    async def async_added_to_hass(self) -> None:
        """Show the last job from before a restart, then follow the jobs."""
        await super().async_added_to_hass()
        if (data := await self.async_get_last_sensor_data()) is not None:
            self._restored_value = to_number(data.native_value)
        if (last := await self.async_get_last_state()) is not None and last.attributes:
            self._restored_attributes = {
                key: last.attributes[key]
                for key in RESTORED_ATTRIBUTES
                if key in last.attributes
            } or None
        signal = progress_signal(self.coordinator.config_entry.entry_id, self._mac)
        self.async_on_remove(
            async_dispatcher_connect(self.hass, signal, self.async_write_ha_state)
        )


def _percent(state: BackfillState) -> float:
    """Return the share of a job's pages done, in percent."""
    return 100 * state.pages_done / state.pages_total


def _job_attributes(state: BackfillState) -> dict[str, Any]:
    """Return the pages and hours of a job."""
    return {
        "pages_done": state.pages_done,
        "pages_total": state.pages_total,
        "hours_imported": state.hours,
    }


class AmbientQueueSensorEntity(AmbientEntity, SensorEntity):
    """The number of the account's API requests waiting in its queue."""

    @property
    @override
    def available(self) -> bool:
        """Return True while the queue runs."""
        return self.coordinator.queue.running

    @property
    @override
    def native_value(self) -> int:
        """Return the requests waiting."""
        return sum(self.coordinator.queue.depth().values())

    @property
    @override
    def extra_state_attributes(self) -> dict[str, Any]:
        """Return what the queue has done."""
        queue = self.coordinator.queue
        return queue.metrics.as_dict() | {"depth": queue.depth()}
