"""Shims that keep the oldest supported dependency versions working.

docs/supported-versions.md lists the floors. Each shim names the release that
makes it unnecessary: raising that floor past it means deleting the shim.
"""

from typing import TYPE_CHECKING, Any

import pydantic_settings
from pydantic_settings import BaseSettings

__all__ = ["NoDecode", "SettingsBase"]

if TYPE_CHECKING or hasattr(pydantic_settings, "NoDecode"):
    from pydantic_settings import NoDecode

    SettingsBase = BaseSettings
else:  # pragma: no cover - pydantic-settings < 2.7 (make test-min runs this branch)
    from pydantic.fields import FieldInfo
    from pydantic_settings import EnvSettingsSource, PydanticBaseSettingsSource

    class NoDecode:
        """Marks a field whose ``ENTRA_*`` value reaches its validators as written,
        not JSON-decoded first (``a,b`` as well as ``["a", "b"]``)."""

    class _EnvSource(EnvSettingsSource):
        """The environment source, honouring ``NoDecode`` as pydantic-settings 2.7 does."""

        def decode_complex_value(self, field_name: str, field: FieldInfo, value: Any) -> Any:
            if field is not None and NoDecode in field.metadata:
                return value
            return super().decode_complex_value(field_name, field, value)

    class SettingsBase(BaseSettings):
        """``BaseSettings`` whose environment source honours ``NoDecode``."""

        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return init_settings, _EnvSource(settings_cls), dotenv_settings, file_secret_settings
