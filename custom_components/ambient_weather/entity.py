"""The base entity of the Ambient Weather integration."""

from homeassistant.helpers.device_registry import DeviceInfo
from homeassistant.helpers.entity import EntityDescription
from homeassistant.helpers.update_coordinator import CoordinatorEntity

from .const import DOMAIN
from .coordinator import AmbientDataUpdateCoordinator


class AmbientEntity(CoordinatorEntity[AmbientDataUpdateCoordinator]):
    """An entity showing one field of one station."""

    _attr_has_entity_name = True

    def __init__(
        self,
        coordinator: AmbientDataUpdateCoordinator,
        mac: str,
        description: EntityDescription,
    ) -> None:
        """Initialize the entity."""
        super().__init__(coordinator)
        self.entity_description = description
        self._mac = mac
        self._attr_unique_id = f"{mac}_{description.key}"
        station = coordinator.data[mac]
        self._attr_device_info = DeviceInfo(
            identifiers={(DOMAIN, mac)},
            manufacturer="Ambient Weather",
            name=station.name,
            model=station.last_data.get("stationtype"),
        )

    @property
    def available(self) -> bool:
        """Return True while the station reports this field."""
        return (
            super().available
            and self._mac in self.coordinator.data
            and self.coordinator.data[self._mac].last_data.get(
                self.entity_description.key
            )
            is not None
        )

    def _field(self) -> object:
        """Return the raw value of this entity's field."""
        return self.coordinator.data[self._mac].last_data.get(
            self.entity_description.key
        )
