"""Sensors for the measurements of Ambient Weather stations."""

from dataclasses import dataclass
from typing import override

from homeassistant.components.sensor import (
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
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .api import to_number
from .coordinator import AmbientConfigEntry
from .entity import AmbientEntity

# The coordinator fetches for every entity at once.
PARALLEL_UPDATES = 0


@dataclass(frozen=True, kw_only=True)
class AmbientSensorEntityDescription(SensorEntityDescription):
    """Describes an Ambient Weather sensor; `key` is the API field."""


def _temperature(key: str, translation_key: str) -> AmbientSensorEntityDescription:
    """Describe a temperature field."""
    return AmbientSensorEntityDescription(
        key=key,
        translation_key=translation_key,
        device_class=SensorDeviceClass.TEMPERATURE,
        native_unit_of_measurement=UnitOfTemperature.FAHRENHEIT,
        state_class=SensorStateClass.MEASUREMENT,
        suggested_display_precision=1,
    )


def _humidity(key: str, translation_key: str) -> AmbientSensorEntityDescription:
    """Describe a relative humidity field."""
    return AmbientSensorEntityDescription(
        key=key,
        translation_key=translation_key,
        device_class=SensorDeviceClass.HUMIDITY,
        native_unit_of_measurement=PERCENTAGE,
        state_class=SensorStateClass.MEASUREMENT,
    )


def _rain_total(key: str, translation_key: str) -> AmbientSensorEntityDescription:
    """Describe a rain accumulator, which the console resets on its own clock."""
    return AmbientSensorEntityDescription(
        key=key,
        translation_key=translation_key,
        device_class=SensorDeviceClass.PRECIPITATION,
        native_unit_of_measurement=UnitOfPrecipitationDepth.INCHES,
        state_class=SensorStateClass.TOTAL_INCREASING,
        suggested_display_precision=2,
    )


def _wind(key: str, translation_key: str) -> AmbientSensorEntityDescription:
    """Describe a wind speed field."""
    return AmbientSensorEntityDescription(
        key=key,
        translation_key=translation_key,
        device_class=SensorDeviceClass.WIND_SPEED,
        native_unit_of_measurement=UnitOfSpeed.MILES_PER_HOUR,
        state_class=SensorStateClass.MEASUREMENT,
        suggested_display_precision=1,
    )


def _pressure(key: str, translation_key: str) -> AmbientSensorEntityDescription:
    """Describe a barometric pressure field."""
    return AmbientSensorEntityDescription(
        key=key,
        translation_key=translation_key,
        device_class=SensorDeviceClass.ATMOSPHERIC_PRESSURE,
        native_unit_of_measurement=UnitOfPressure.INHG,
        state_class=SensorStateClass.MEASUREMENT,
        suggested_display_precision=2,
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


class AmbientSensorEntity(AmbientEntity, SensorEntity):
    """A sensor showing one numeric field of a station."""

    entity_description: AmbientSensorEntityDescription

    @property
    @override
    def native_value(self) -> float | None:
        """Return the field's value, or None when it is not a number."""
        return to_number(self._field())
