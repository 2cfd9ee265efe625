"""The error answer of the API: an HTTP status and Databricks' ``{"error_code", "message"}`` body."""

from __future__ import annotations


class ApiError(Exception):
    def __init__(self, status: int, error_code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error_code, self.message = status, error_code, message

    def body(self) -> dict[str, str]:
        return {"error_code": self.error_code, "message": self.message}
