"""Job configuration: immutable pydantic models of every job YAML, their loading and fingerprints.

Import from the modules (`llavast.config.stage`, `llavast.config.loader`, `llavast.config.data`); this
package file stays empty so that importing one section never drags in the others.
"""
