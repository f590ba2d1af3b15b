from rest_framework.routers import SimpleRouter

from catalog.api import views

router = SimpleRouter(trailing_slash=False)
router.register("products", views.ProductViewSet, basename="product")
router.register("plans", views.PlanViewSet, basename="plan")
router.register("customers", views.CustomerViewSet, basename="customer")
router.register("contracts", views.ContractViewSet, basename="contract")
urlpatterns = router.urls
