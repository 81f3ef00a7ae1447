"""Binary sensors for the battery and leak flags of Ambient Weather stations."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import override

from homeassistant.components.binary_sensor import (
    BinarySensorDeviceClass,
    BinarySensorEntity,
    BinarySensorEntityDescription,
)
from homeassistant.const import EntityCategory
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .api import to_number
from .coordinator import AmbientConfigEntry
from .entity import AmbientEntity

PARALLEL_UPDATES = 0


@dataclass(frozen=True, kw_only=True)
class AmbientBinarySensorEntityDescription(BinarySensorEntityDescription):
    """Describes a flag; `is_on_fn` maps the API's number to on, off or unknown."""

    is_on_fn: Callable[[float], bool | None]


def _low_when_zero(value: float) -> bool:
    """Read a battery flag where 1 means OK and 0 means low."""
    return value == 0


def _low_when_one(value: float) -> bool:
    """Read a battery flag where 1 means low (lightning and leak sensors)."""
    return value == 1


def _leak(value: float) -> bool | None:
    """Read a leak flag: 0 is dry, 1 is a leak, 2 means the sensor is offline."""
    return None if value == 2 else value == 1


def _battery(
    key: str, translation_key: str, is_on_fn: Callable[[float], bool | None]
) -> AmbientBinarySensorEntityDescription:
    """Describe a battery-low flag."""
    return AmbientBinarySensorEntityDescription(
        key=key,
        translation_key=translation_key,
        device_class=BinarySensorDeviceClass.BATTERY,
        entity_category=EntityCategory.DIAGNOSTIC,
        is_on_fn=is_on_fn,
    )


BINARY_SENSORS: tuple[AmbientBinarySensorEntityDescription, ...] = (
    _battery("battout", "battery_outdoor", _low_when_zero),
    _battery("battin", "battery_indoor", _low_when_zero),
    *(
        _battery(f"batt{channel}", f"battery_channel_{channel}", _low_when_zero)
        for channel in range(1, 11)
    ),
    _battery("batt_co2", "battery_co2", _low_when_zero),
    _battery("batt_25", "battery_pm25", _low_when_zero),
    _battery("batt_lightning", "battery_lightning", _low_when_one),
    *(
        _battery(f"batleak{channel}", f"battery_leak_{channel}", _low_when_one)
        for channel in range(1, 5)
    ),
    *(
        AmbientBinarySensorEntityDescription(
            key=f"leak{channel}",
            translation_key=f"leak_{channel}",
            device_class=BinarySensorDeviceClass.MOISTURE,
            is_on_fn=_leak,
        )
        for channel in range(1, 5)
    ),
)


async def async_setup_entry(
    hass: HomeAssistant,
    entry: AmbientConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add a binary sensor for every known flag each station reports."""
    coordinator = entry.runtime_data.coordinator
    async_add_entities(
        AmbientBinarySensorEntity(coordinator, station.mac, description)
        for station in coordinator.data.values()
        for description in BINARY_SENSORS
        if description.key in station.last_data
    )


class AmbientBinarySensorEntity(AmbientEntity, BinarySensorEntity):
    """A binary sensor showing one flag of a station."""

    entity_description: AmbientBinarySensorEntityDescription

    @property
    @override
    def is_on(self) -> bool | None:
        """Return the flag's state, or None when it cannot be read."""
        if (value := to_number(self._field())) is None:
            return None
        return self.entity_description.is_on_fn(value)
